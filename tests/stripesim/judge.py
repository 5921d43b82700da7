"""A small validator of Stripe's response schemas (`openapi-judge.json`), our own.

It reads the judge as `../shared/stripe/README.md` says: a property not in `required` may be
absent, `nullable` may be null, expandable fields are `anyOf [string, $ref]`, maps are
`additionalProperties`. It is stricter than the judge in two ways Stripe itself is: a key the
schema does not know is a difference, and an enum is closed (`x-open` or not). Lists may carry
`total_count`, which live Stripe sends on embedded lists and the judge leaves out.
"""

from __future__ import annotations

import re
from typing import Any

_LIST_EXTRAS = {"total_count"}


class Judge:
    """Validates values against the judge's schemas, collecting every difference."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document["components"]["schemas"]
        self._operations = _operations(document["paths"])

    # -- what to validate against -------------------------------------------------------------

    def response_schema(self, method: str, path: str) -> dict[str, Any] | None:
        """Return the 200 response schema of the operation serving `method path`, if any."""
        found = self.operation(method, path)
        if found is None:
            return None
        content = found[1]["responses"]["200"]["content"]["application/json"]
        return dict(content["schema"])

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """Return (path template, operation) serving `method path`, if the judge has one."""
        for pattern, template, operations in self._operations:
            if pattern.match(path) and method.lower() in operations:
                return template, operations[method.lower()]
        return None

    def event_object_schema(self, event_type: str) -> dict[str, Any] | None:
        found = self.document["x-event-objects"].get(event_type)
        return dict(found) if found is not None else None

    def object_schema(self, kind: str) -> dict[str, Any] | None:
        name = self.document["x-object-kinds"].get(kind)
        return {"$ref": f"#/components/schemas/{name}"} if name else None

    # -- validating ---------------------------------------------------------------------------

    def errors(self, value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
        """Return every way `value` differs from `schema` ("path: problem"), none if valid."""
        found: list[str] = []
        self._check(value, schema, path or "$", found)
        return found

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            nullable = schema.get("nullable", False)
            schema = {
                **self.schemas[schema["$ref"].rsplit("/", 1)[-1]],
                **({"nullable": True} if nullable else {}),
            }
        return schema

    def _check(self, value: Any, schema: dict[str, Any], path: str, found: list[str]) -> None:
        schema = self._resolve(schema)
        if not set(schema) - {"title", "nullable"}:
            return  # an empty schema takes anything (free-form hashes such as use_stripe_sdk)
        if value is None:
            if not schema.get("nullable"):
                found.append(f"{path}: null where the schema does not allow it")
            return
        if "anyOf" in schema:
            self._check_any(value, schema, path, found)
            return
        if "enum" in schema and value not in schema["enum"]:
            found.append(f"{path}: {value!r} is not one of {schema['enum']}")
            return
        kind = schema.get("type")
        if kind == "object" or "properties" in schema or "additionalProperties" in schema:
            self._check_object(value, schema, path, found)
        elif kind == "array":
            if not isinstance(value, list):
                found.append(f"{path}: expected an array, got {type(value).__name__}")
                return
            for index, item in enumerate(value):
                self._check(item, schema.get("items") or {}, f"{path}[{index}]", found)
        elif kind == "string":
            if not isinstance(value, str):
                found.append(f"{path}: expected a string, got {value!r}")
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                found.append(f"{path}: expected a number, got {value!r}")
        elif kind == "boolean" and not isinstance(value, bool):
            found.append(f"{path}: expected a boolean, got {value!r}")

    def _check_any(self, value: Any, schema: dict[str, Any], path: str, found: list[str]) -> None:
        best: list[str] | None = None
        for alternative in schema["anyOf"]:
            merged = {**alternative, **({"nullable": True} if schema.get("nullable") else {})}
            attempt: list[str] = []
            self._check(value, merged, path, attempt)
            if not attempt:
                return
            if best is None or len(attempt) < len(best):
                best = attempt
        found.extend(best or [f"{path}: matches no alternative"])

    def _check_object(
        self, value: Any, schema: dict[str, Any], path: str, found: list[str]
    ) -> None:
        if not isinstance(value, dict):
            found.append(f"{path}: expected an object, got {value!r}")
            return
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        is_list = (properties.get("object") or {}).get("enum") == ["list"]
        for key in schema.get("required") or []:
            if key not in value:
                found.append(f"{path}.{key}: missing")
        for key, item in value.items():
            if key in properties:
                self._check(item, properties[key], f"{path}.{key}", found)
            elif isinstance(extra, dict):
                self._check(item, extra, f"{path}.{key}", found)
            elif extra is True or (is_list and key in _LIST_EXTRAS):
                continue
            else:
                found.append(f"{path}.{key}: not in the schema")


def _operations(paths: dict[str, Any]) -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    """Return (matcher, template, operations) per path, literal paths before templated ones."""
    rows = []
    for template, operations in paths.items():
        regex = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        rows.append((re.compile(regex), template, operations))
    rows.sort(key=lambda row: (row[1].count("{"), -len(row[1])))
    return rows
