"""Lists, search, `expand[]` and parameter coercion, shared by every resource."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from stripesim.currency import CURRENCIES
from stripesim.errors import StripeError, parameter_invalid, parameter_missing, resource_missing
from stripesim.state import Account, snapshot
from stripesim.tables import Key, Table, list_time

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


def required_int(params: dict[str, Any], key: str) -> int:
    """The integer parameter `key`, which the request must carry (Stripe's missing error)."""
    value = as_int(params, key)
    if value is None:
        raise parameter_missing(key)
    return value


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
        raise parameter_invalid(key, f"Invalid decimal: {value}") from None


def as_currency(params: dict[str, Any], key: str = "currency") -> str:
    """The currency parameter `key`, lower-cased; one Stripe does not support is a 400."""
    currency = str(params.get(key) or "").lower()
    if currency not in CURRENCIES:
        raise StripeError(f"Invalid currency: {currency}", param=key)
    return currency


def require(params: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if params.get(key) in (None, ""):
            raise parameter_missing(key)


def one_of(
    params: dict[str, Any], key: str, allowed: Iterable[str], default: str | None = None
) -> str | None:
    value = params.get(key, default)
    if value is not None and value not in allowed:
        raise parameter_invalid(key, f"Invalid {key}: must be one of {', '.join(allowed)}")
    return value


def required_object(
    account: Account, params: dict[str, Any], key: str, kind: str, *, label: str | None = None
) -> dict[str, Any]:
    """Return the object the required parameter `key` names (Stripe's missing or 404 error)."""
    object_id = params.get(key)
    if not object_id:
        raise parameter_missing(key)
    return account.get(object_id, kind, param=key, label=label)


def customer_owned(
    account: Account, customer_id: str, object_id: str, kind: str, *, label: str
) -> dict[str, Any]:
    """Return the customer's own `kind` object (a transaction, a tax ID, a PaymentMethod): the
    customer must exist, and another customer's object answers Stripe's 404 as a missing one."""
    account.get(customer_id, "customer")
    obj = account.get(object_id, kind, label=label)
    if obj.get("customer") != customer_id:
        raise resource_missing(label, object_id)
    return obj


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
    if obj is None or obj.get("object") != kind or obj.get("_deleted"):
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
    # A new dict, assigned: a stored object's table reindexes on the assignment.
    current = dict(obj.get("metadata") or {})
    for key, value in metadata.items():
        if value == "":
            current.pop(key, None)
        else:
            current[key] = str(value)
    obj["metadata"] = current


def matches_created(obj: dict[str, Any], created: Any) -> bool:
    """Apply Stripe's `created` filter: an exact timestamp, or `created[gte|gt|lt|lte]`."""
    if created is None:
        return True
    # The request's check refused any other key of `created` (stripesim.params).
    if isinstance(created, dict):
        return all(_CREATED_OPS[op](list_time(obj), int(bound)) for op, bound in created.items())
    return list_time(obj) == int(created)


def _limit(params: dict[str, Any]) -> int:
    limit = as_int(params, "limit", 10)
    assert limit is not None
    if not 1 <= limit <= 100:
        raise StripeError(
            "Invalid limit: must be between 1 and 100",
            code="parameter_invalid_integer",
            param="limit",
        )
    return limit


def paginate(
    account: Account,
    kind: str,
    params: dict[str, Any],
    url: str,
    *,
    filters: dict[str, Any] | None = None,
    where: Callable[[dict[str, Any]], bool] | None = None,
    objects: Iterable[dict[str, Any]] | None = None,
    view: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Answer a Stripe list: newest first, limit, cursors, `created`, equality `filters`."""
    # An indexed filter (None means "any") narrows the walk to its objects and `where` checks
    # the rest; `objects` lists a given sequence instead (lines, summaries: things not stored
    # on their own); `view` shows each listed object as the API does.
    limit = _limit(params)
    if objects is not None:
        page, has_more = _page_of_rows(list(objects), params, limit, filters, where)
    else:
        page, has_more = _page_of_table(account, kind, params, limit, filters, where)
    shown = [view(obj) for obj in page] if view is not None else page
    data = [expand(account, render(obj), _list_expand(params)) for obj in shown]
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def _wanted(
    obj: dict[str, Any],
    filters: dict[str, Any],
    where: Callable[[dict[str, Any]], bool] | None,
) -> bool:
    if obj.get("_deleted"):
        return False
    if any(obj.get(field) != value for field, value in filters.items()):
        return False
    return where is None or where(obj)


def list_customer_owned(
    account: Account,
    params: dict[str, Any],
    customer_id: str,
    kind: str,
    collection: str,
    *,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """List the customer's own `kind` objects at `/v1/customers/{id}/{collection}`, newest first
    (the customer must exist), whose fields equal `filters` (None means "any")."""
    account.get(customer_id, "customer")
    url = f"/v1/customers/{customer_id}/{collection}"
    return paginate(
        account, kind, params, url, filters={"customer": customer_id, **(filters or {})}
    )


def _page_of_table(
    account: Account,
    kind: str,
    params: dict[str, Any],
    limit: int,
    filters: dict[str, Any] | None,
    where: Callable[[dict[str, Any]], bool] | None,
) -> tuple[list[dict[str, Any]], bool]:
    """Walk the narrowest index from the cursor, newest first, until the page is full."""
    table = account.tables.get(kind)
    if table is None:
        return [], False
    wanted = {field: value for field, value in (filters or {}).items() if value is not None}
    candidates, rest = table.candidates(wanted)
    keys, ids = candidates.keys, candidates.ids
    low, high = _created_range(keys, params.get("created"))
    objects = account.objects
    if params.get("ending_before"):
        cursor = _cursor_key(table, params["ending_before"], "ending_before")
        low = max(low, bisect.bisect_right(keys, cursor))
        found = []
        for index in range(low, high):
            obj = objects[ids[index]]
            if _wanted(obj, rest, where):
                found.append(obj)
                if len(found) > limit:
                    break
        return list(reversed(found[:limit])), len(found) > limit
    if params.get("starting_after"):
        cursor = _cursor_key(table, params["starting_after"], "starting_after")
        high = min(high, bisect.bisect_left(keys, cursor))
    found = []
    for index in range(high - 1, low - 1, -1):
        obj = objects[ids[index]]
        if _wanted(obj, rest, where):
            found.append(obj)
            if len(found) > limit:
                break
    return found[:limit], len(found) > limit


def _created_range(keys: list[Key], created: Any) -> tuple[int, int]:
    """Return the index range of `keys` whose time passes the `created` filter."""
    if created is None:
        return 0, len(keys)
    if not isinstance(created, dict):
        exact = int(created)
        return bisect.bisect_left(keys, (exact, 0)), bisect.bisect_left(keys, (exact + 1, 0))
    low, high = 0, len(keys)
    for op, raw in created.items():
        bound = int(raw)
        if op == "gt":
            low = max(low, bisect.bisect_left(keys, (bound + 1, 0)))
        elif op == "gte":
            low = max(low, bisect.bisect_left(keys, (bound, 0)))
        elif op == "lt":
            high = min(high, bisect.bisect_left(keys, (bound, 0)))
        else:
            high = min(high, bisect.bisect_left(keys, (bound + 1, 0)))
    return low, max(low, high)


def _cursor_key(table: Table, cursor: Any, param: str) -> Key:
    key = table.keys.get(cursor) if isinstance(cursor, str) else None
    if key is None:
        raise resource_missing("object", str(cursor), param)
    return key


def _page_of_rows(
    pool: list[dict[str, Any]],
    params: dict[str, Any],
    limit: int,
    filters: dict[str, Any] | None,
    where: Callable[[dict[str, Any]], bool] | None,
) -> tuple[list[dict[str, Any]], bool]:
    """Page through a given sequence (oldest first): newest first, same-second newest first."""
    wanted = {field: value for field, value in (filters or {}).items() if value is not None}
    rows = [
        obj
        for obj in reversed(pool)
        if matches_created(obj, params.get("created")) and _wanted(obj, wanted, where)
    ]
    rows.sort(key=lambda obj: -list_time(obj))
    ids = [obj["id"] for obj in rows]
    if params.get("starting_after"):
        cursor = _cursor_index(ids, params["starting_after"], "starting_after")
        return rows[cursor + 1 : cursor + 1 + limit], cursor + 1 + limit < len(rows)
    if params.get("ending_before"):
        cursor = _cursor_index(ids, params["ending_before"], "ending_before")
        start = max(0, cursor - limit)
        return rows[start:cursor], start > 0
    return rows[:limit], len(rows) > limit


def _cursor_index(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise resource_missing("object", cursor, param) from None


def _list_expand(params: dict[str, Any]) -> list[str]:
    # In a list, `expand[]=data.customer` expands inside each element.
    return [path[len("data.") :] for path in params.get("expand") or [] if path.startswith("data.")]


_SEARCH_CLAUSE = re.compile(
    r"""(?P<field>[a-z_]+(?:\[['"][^'"]+['"]\])?)\s*(?P<op>:|>=|<=|>|<)\s*(?P<value>'[^']*'|"[^"]*"|[0-9]+)""",
)
_METADATA_FIELD = re.compile(r"""metadata\[['"](?P<key>[^'"]+)['"]\]""")


def search(
    account: Account,
    kind: str,
    params: dict[str, Any],
    url: str,
    *,
    view: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Answer Stripe's search subset: `field:'v'`, `metadata['k']:'v'`, `created>N`, AND/OR."""
    query = params.get("query") or ""
    if not query:
        raise parameter_missing("query")
    use_or = " OR " in query
    parsed = []
    for clause in re.split(r"\s+(?:AND|OR)\s+", query.strip()):
        match = _SEARCH_CLAUSE.fullmatch(clause.strip())
        if not match:
            raise StripeError(f"Invalid search query: {query}", param="query")
        parsed.append(match.groupdict())

    def hit(obj: dict[str, Any]) -> bool:
        if obj.get("_deleted"):
            return False
        results = [_clause_hits(obj, clause) for clause in parsed]
        return any(results) if use_or else all(results)

    limit = as_int(params, "limit", 10) or 10
    offset = int(params.get("page") or 0)
    found = []
    for obj in _search_candidates(account, kind, parsed, use_or):
        if hit(obj):
            found.append(obj)
            if len(found) > offset + limit:
                break
    page = found[offset : offset + limit]
    has_more = len(found) > offset + limit
    return {
        "object": "search_result",
        "data": [render(view(obj) if view is not None else obj) for obj in page],
        "has_more": has_more,
        "next_page": str(offset + limit) if has_more else None,
        "url": url,
    }


def _search_candidates(
    account: Account, kind: str, clauses: list[dict[str, str]], use_or: bool
) -> Iterator[dict[str, Any]]:
    """Yield objects that may match, newest first: a metadata clause's index when ANDed."""
    table = account.tables.get(kind)
    if table is None:
        return
    candidates = table.listed
    if not use_or:
        for clause in clauses:
            metadata = _METADATA_FIELD.fullmatch(clause["field"])
            if metadata and clause["op"] == ":":
                value = clause["value"].strip("'\"").lower()
                narrowed = table.metadata_candidates(metadata["key"], value)
                if narrowed is not None and len(narrowed) < len(candidates):
                    candidates = narrowed
    for object_id in reversed(list(candidates.ids)):
        yield account.objects[object_id]


def _clause_hits(obj: dict[str, Any], clause: dict[str, str]) -> bool:
    field, op, raw = clause["field"], clause["op"], clause["value"]
    value = raw.strip("'\"")
    metadata = _METADATA_FIELD.fullmatch(field)
    actual = (obj.get("metadata") or {}).get(metadata["key"]) if metadata else obj.get(field)
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
