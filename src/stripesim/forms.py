"""Decode Stripe's form encoding (`items[0][price]=…`, `expand[]=…`) into nested data."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from stripesim.errors import StripeError

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode_form(body: str) -> dict[str, Any]:
    """Turn a urlencoded body or query string into nested dicts and lists."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        match = _KEY.match(raw_key)
        if not match:
            raise StripeError(
                f"Invalid parameter name: {raw_key}", code="parameter_unknown", param=raw_key
            )
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":
                # `expand[]=a&expand[]=b` appends; give each its own index.
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise StripeError(
                        f"Invalid nesting for parameter {raw_key}",
                        code="parameter_invalid",
                        param=raw_key,
                    )
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted
