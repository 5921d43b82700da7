"""Lists, search, `expand[]` and parameter coercion, shared by every resource."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from stripesim.errors import StripeError, parameter_missing
from stripesim.state import Account, snapshot

_CREATED_OPS = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}


def as_int(
    params: dict[str, Any], key: str, default: int | None = None, *, param: str | None = None
) -> int | None:
    """The integer parameter `key`, or a Stripe `parameter_invalid_integer` error."""
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeError(
            f"Invalid integer: {value}", code="parameter_invalid_integer", param=param or key
        ) from None


def as_bool(params: dict[str, Any], key: str, default: bool | None = None) -> bool | None:
    value = params.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise StripeError(f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=key)


def as_decimal(params: dict[str, Any], key: str, default: Decimal | None = None) -> Decimal | None:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise StripeError(
            f"Invalid decimal: {value}", code="parameter_invalid_string", param=key
        ) from None


def require(params: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if params.get(key) in (None, ""):
            raise parameter_missing(key)


def one_of(
    params: dict[str, Any], key: str, allowed: Iterable[str], default: str | None = None
) -> str | None:
    value = params.get(key, default)
    if value is not None and value not in allowed:
        raise StripeError(
            f"Invalid {key}: must be one of {', '.join(allowed)}",
            code="parameter_invalid_string",
            param=key,
        )
    return value


def required_object(
    account: Account, params: dict[str, Any], key: str, kind: str, *, label: str | None = None
) -> dict[str, Any]:
    """Return the object the required parameter `key` names (Stripe's missing or 404 error)."""
    object_id = params.get(key)
    if not object_id:
        raise parameter_missing(key)
    return account.get(object_id, kind, param=key, label=label)


def param_name(prefix: str, path: str) -> str:
    """Return `path` (e.g. `recurring[interval]`) as a parameter nested under `prefix`, if any."""
    if not prefix:
        return path
    head, bracket, rest = path.partition("[")
    return f"{prefix}[{head}]" + (bracket + rest if bracket else "")


def reference(
    account: Account, object_id: Any, kind: str, param: str, label: str
) -> dict[str, Any]:
    """Return the object a parameter names; Stripe answers 400 `resource_missing` if absent."""
    obj = account.find(object_id)
    if obj is None or obj.get("object") != kind or obj.get("deleted"):
        raise StripeError(f"No such {label}: '{object_id}'", code="resource_missing", param=param)
    return obj


def update_metadata(obj: dict[str, Any], metadata: Any) -> None:
    """Apply Stripe's metadata rules: `metadata[k]=""` deletes k, `metadata=""` clears all."""
    if metadata is None:
        return
    if metadata == "":
        obj["metadata"] = {}
        return
    if not isinstance(metadata, dict):
        raise StripeError("Invalid metadata: must be a hash", param="metadata")
    current = obj.setdefault("metadata", {})
    for key, value in metadata.items():
        if value == "":
            current.pop(key, None)
        else:
            current[key] = str(value)


def matches_created(obj: dict[str, Any], created: Any) -> bool:
    """Stripe's `created` filter: an exact timestamp, or `created[gte|gt|lt|lte]`."""
    if created is None:
        return True
    if isinstance(created, dict):
        for op, bound in created.items():
            if op not in _CREATED_OPS:
                raise StripeError(
                    f"Received unknown parameter: created[{op}]",
                    code="parameter_unknown",
                    param=f"created[{op}]",
                )
            if not _CREATED_OPS[op](int(obj["created"]), int(bound)):
                return False
        return True
    return int(obj["created"]) == int(created)


def paginate(
    account: Account,
    kind: str,
    params: dict[str, Any],
    url: str,
    *,
    where: Callable[[dict[str, Any]], bool] | None = None,
    objects: Iterable[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Stripe list: newest first, limit, starting_after, ending_before, created filters."""
    limit = as_int(params, "limit", 10)
    assert limit is not None
    if not 1 <= limit <= 100:
        raise StripeError(
            "Invalid limit: must be between 1 and 100",
            code="parameter_invalid_integer",
            param="limit",
        )
    pool = list(objects if objects is not None else account.all(kind))
    # Newest first; objects created in the same second keep reverse creation order.
    rows = [
        obj
        for obj in reversed(pool)
        if matches_created(obj, params.get("created")) and (where is None or where(obj))
    ]
    rows.sort(key=lambda obj: -int(obj.get("created") or 0))
    ids = [obj["id"] for obj in rows]
    if params.get("starting_after"):
        cursor = _cursor_index(ids, params["starting_after"], "starting_after")
        page = rows[cursor + 1 : cursor + 1 + limit]
        has_more = cursor + 1 + limit < len(rows)
    elif params.get("ending_before"):
        cursor = _cursor_index(ids, params["ending_before"], "ending_before")
        start = max(0, cursor - limit)
        page = rows[start:cursor]
        has_more = start > 0
    else:
        page = rows[:limit]
        has_more = len(rows) > limit
    data = [expand(account, render(obj), _list_expand(params)) for obj in page]
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def _cursor_index(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise StripeError(
            f"No such object: '{cursor}'", status=404, code="resource_missing", param=param
        ) from None


def _list_expand(params: dict[str, Any]) -> list[str]:
    # In a list, `expand[]=data.customer` expands inside each element.
    return [path[len("data.") :] for path in params.get("expand") or [] if path.startswith("data.")]


_SEARCH_CLAUSE = re.compile(
    r"""(?P<field>[a-z_]+(?:\[['"][^'"]+['"]\])?)\s*(?P<op>:|>=|<=|>|<)\s*(?P<value>'[^']*'|"[^"]*"|[0-9]+)""",
)


def search(account: Account, kind: str, params: dict[str, Any], url: str) -> dict[str, Any]:
    """Stripe's search subset: `field:'v'`, `metadata['k']:'v'`, `created>N`, joined by AND/OR."""
    query = params.get("query") or ""
    if not query:
        raise parameter_missing("query")
    use_or = " OR " in query
    clauses = re.split(r"\s+(?:AND|OR)\s+", query.strip())
    parsed = []
    for clause in clauses:
        match = _SEARCH_CLAUSE.fullmatch(clause.strip())
        if not match:
            raise StripeError(f"Invalid search query: {query}", param="query")
        parsed.append(match.groupdict())

    def hit(obj: dict[str, Any]) -> bool:
        results = [_clause_hits(obj, clause) for clause in parsed]
        return any(results) if use_or else all(results)

    limit = as_int(params, "limit", 10) or 10
    rows = sorted((obj for obj in account.all(kind) if hit(obj)), key=lambda o: -int(o["created"]))
    offset = int(params.get("page") or 0)
    page = rows[offset : offset + limit]
    has_more = offset + limit < len(rows)
    return {
        "object": "search_result",
        "data": [render(obj) for obj in page],
        "has_more": has_more,
        "next_page": str(offset + limit) if has_more else None,
        "url": url,
    }


def _clause_hits(obj: dict[str, Any], clause: dict[str, str]) -> bool:
    field, op, raw = clause["field"], clause["op"], clause["value"]
    value = raw.strip("'\"")
    if field.startswith("metadata["):
        actual = (obj.get("metadata") or {}).get(field[len("metadata[") + 1 : -2])
    else:
        actual = obj.get(field)
    if op == ":":
        return actual is not None and str(actual).lower() == value.lower()
    if actual is None:
        return False
    number, bound = int(actual), int(value)
    return {">": number > bound, "<": number < bound, ">=": number >= bound, "<=": number <= bound}[
        op
    ]


def render(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API returns it: a copy without the simulator's private `_` keys."""
    copy = snapshot(obj)
    _strip_private(copy)
    return copy


def _strip_private(node: Any) -> None:
    if isinstance(node, dict):
        for key in [key for key in node if key.startswith("_")]:
            del node[key]
        for value in node.values():
            _strip_private(value)
    elif isinstance(node, list):
        for value in node:
            _strip_private(value)


def expand(account: Account, obj: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """Replace ids on the dotted `paths` with the objects they name (Stripe's `expand[]`)."""
    for path in paths or []:
        _expand_path(account, obj, path.split("."))
    return obj


def _expand_path(account: Account, node: Any, parts: list[str]) -> None:
    if not parts or node is None:
        return
    if isinstance(node, list):
        for item in node:
            _expand_path(account, item, parts)
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    value = node.get(head)
    if isinstance(value, str):
        target = account.find(value)
        if target is not None:
            node[head] = value = render(target)
    elif isinstance(value, list):
        expanded = []
        for item in value:
            target = account.find(item) if isinstance(item, str) else None
            expanded.append(render(target) if target is not None else item)
        node[head] = value = expanded
    _expand_path(account, value, rest)


def apply_changes(
    obj: dict[str, Any], values: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """Set `values` and any `metadata` in `params` on `obj`; return what changed, as it was."""
    previous: dict[str, Any] = {}
    for key, value in values.items():
        if obj.get(key) != value:
            previous[key] = obj.get(key)
            obj[key] = value
    if "metadata" in params:
        before = dict(obj.get("metadata") or {})
        update_metadata(obj, params["metadata"])
        if obj["metadata"] != before:
            previous["metadata"] = before
    return previous
