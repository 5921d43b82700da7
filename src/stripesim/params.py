"""Check request parameters against the stripe SDK's generated parameter types (`stripe.params`).

An unknown parameter answers `parameter_unknown` and a missing required one `parameter_missing`,
as Stripe does. Only the names and nesting are checked here; handlers coerce values.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from functools import cache
from typing import Any

from stripesim.errors import StripeError, parameter_missing

# Keys of stripe's RequestOptions are client options, not body parameters.
_REQUEST_OPTIONS = {
    "api_key",
    "stripe_version",
    "stripe_account",
    "stripe_context",
    "max_network_retries",
    "idempotency_key",
    "content_type",
    "headers",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Shape:
    """The accepted keys of one TypedDict, with the shapes of nested values."""

    def __init__(
        self,
        fields: dict[str, Shape | None],
        required: frozenset[str],
        open_: bool,
        values: Shape | None = None,
    ) -> None:
        self.fields = fields
        self.required = required
        self.open = open_
        self.values = values  # for maps keyed by anything (e.g. currency): each value's shape


@cache
def params_class(dotted: str) -> type:
    """Resolve `billing.MeterEventCreateParams` to the class in `stripe.params`."""
    package, _, name = dotted.rpartition(".")
    module = importlib.import_module("stripe.params" + (f".{package}" if package else ""))
    return getattr(module, name)


@cache
def shape_of(cls: type) -> Shape:
    fields: dict[str, Shape | None] = {}
    required: set[str] = set()
    for klass in reversed(cls.__mro__):
        annotations = inspect.get_annotations(klass)
        module = sys.modules[klass.__module__]
        for key, annotation in annotations.items():
            if key in _REQUEST_OPTIONS:
                continue
            text = annotation if isinstance(annotation, str) else repr(annotation)
            fields[key] = _nested_shape(text, module)
            if "NotRequired" not in text:
                required.add(key)
    return Shape(fields, frozenset(required), open_=False)


_MAP_OF = re.compile(r"Dict\[str, (\w+)\]")


def _nested_shape(text: str, module: Any) -> Shape | None:
    """The shape of a value whose annotation is `text`, or None when any value goes."""
    mapped = _MAP_OF.search(text)
    if mapped:
        # `Dict[str, XParams]` (e.g. `currency_options[eur][unit_amount]`): any key, typed values.
        candidate = getattr(module, mapped.group(1), None)
        if isinstance(candidate, type) and hasattr(candidate, "__required_keys__"):
            return Shape({}, frozenset(), open_=False, values=shape_of(candidate))
    typed_dicts = []
    for name in _NAME.findall(text.replace("ForwardRef", " ")):
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and hasattr(candidate, "__required_keys__"):
            typed_dicts.append(candidate)
    if typed_dicts:
        merged: dict[str, Shape | None] = {}
        required: set[str] = set()
        for typed_dict in typed_dicts:
            nested = shape_of(typed_dict)
            merged.update(nested.fields)
            required |= nested.required
        # With several alternatives only keys common to all are truly required.
        if len(typed_dicts) > 1:
            required = set.intersection(*(set(shape_of(t).required) for t in typed_dicts))
        return Shape(merged, frozenset(required), open_=False)
    if "Dict[" in text or "Mapping[" in text:
        return Shape({}, frozenset(), open_=True)
    return None


def validate(dotted: str, params: dict[str, Any]) -> None:
    """Raise a Stripe error for an unknown or missing parameter."""
    _check(shape_of(params_class(dotted)), params, prefix="")


def _check(shape: Shape, value: Any, prefix: str) -> None:
    if shape.open or value == "":
        return  # metadata-like maps take any key; "" unsets a whole hash
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(shape, item, f"{prefix}[{index}]")
        return
    if not isinstance(value, dict):
        return
    if shape.values is not None:
        for key, item in value.items():
            _check(shape.values, item, f"{prefix}[{key}]")
        return
    for key, item in value.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in shape.fields:
            raise StripeError(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
        nested = shape.fields[key]
        if nested is not None:
            _check(nested, item, name)
    for key in sorted(shape.required):
        if key not in value:
            raise parameter_missing(f"{prefix}[{key}]" if prefix else key)
