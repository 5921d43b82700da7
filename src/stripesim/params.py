"""Check every request's parameters against the stripe SDK's generated types (`stripe.params`).

One check serves every route: the names and nesting (an unknown parameter answers
`parameter_unknown`), required parameters (`parameter_missing`), enum values (the SDK's
`Literal[...]`; its `|str` is the SDK's room for values added later, not a promise that Stripe
takes any string), integers, numbers, booleans, arrays and hashes. Errors take Stripe's shape:
`type`, `code`, `param`, `message`. Handlers still coerce the values they use.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from stripesim.errors import StripeError, parameter_invalid, parameter_missing

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
_SCALARS = {str: "string", int: "integer", float: "number", Decimal: "decimal", bool: "boolean"}


@dataclass
class Spec:
    """What one parameter accepts: the union of the SDK annotation's alternatives."""

    enum: tuple[str, ...] = ()  # Literal values other than ""
    empty: bool = False  # "" is accepted (it unsets the field)
    scalars: set[str] = field(default_factory=set)  # string, integer, number, decimal, boolean
    items: Spec | None = None  # a list's elements
    fields: dict[str, Spec] | None = None  # a hash with known keys
    required: frozenset[str] = frozenset()
    values: Spec | None = None  # a map with any keys (metadata, currency_options)
    free: bool = False  # anything goes (an untyped object)

    def merge(self, other: Spec) -> None:
        """Add another alternative of a union to this spec."""
        self.enum = self.enum + tuple(value for value in other.enum if value not in self.enum)
        self.empty = self.empty or other.empty
        self.scalars |= other.scalars
        self.free = self.free or other.free
        if other.items is not None:
            if self.items is None:
                self.items = Spec()
            self.items.merge(other.items)
        if other.values is not None:
            if self.values is None:
                self.values = Spec()
            self.values.merge(other.values)
        if other.fields is not None:
            if self.fields is None:
                self.fields, self.required = dict(other.fields), other.required
            else:
                # With several hash alternatives only keys common to all are truly required.
                self.fields.update(other.fields)
                self.required = self.required & other.required


@cache
def params_class(dotted: str) -> type:
    """Resolve `billing.MeterEventCreateParams` to the class in `stripe.params`."""
    package, _, name = dotted.rpartition(".")
    module = importlib.import_module("stripe.params" + (f".{package}" if package else ""))
    return typing.cast(type, getattr(module, name))


@cache
def spec_of(cls: type) -> Spec:
    """Return the spec of a params TypedDict: its keys, their specs, the required ones."""
    fields: dict[str, Spec] = {}
    required: set[str] = set()
    for klass in reversed(cls.__mro__):
        if not hasattr(klass, "__required_keys__") or klass.__name__ == "RequestOptions":
            continue
        namespace = vars(sys.modules[klass.__module__])
        for key, annotation in inspect.get_annotations(klass).items():
            if key in _REQUEST_OPTIONS:
                continue
            resolved, optional = _strip_not_required(annotation, namespace)
            fields[key] = _spec(resolved, namespace)
            if not optional:
                required.add(key)
    return Spec(fields=fields, required=frozenset(required))


def _evaluate(annotation: Any, namespace: dict[str, Any]) -> Any:
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        return eval(annotation, dict(namespace))  # noqa: S307 - the SDK's own annotation text
    return annotation


def _strip_not_required(annotation: Any, namespace: dict[str, Any]) -> tuple[Any, bool]:
    annotation = _evaluate(annotation, namespace)
    if typing.get_origin(annotation) is typing.NotRequired:
        return _evaluate(typing.get_args(annotation)[0], namespace), True
    return annotation, False


def _spec(annotation: Any, namespace: dict[str, Any]) -> Spec:
    """Build the spec of one annotation (a Literal, scalar, list, map, TypedDict or a union)."""
    annotation = _evaluate(annotation, namespace)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        spec = Spec()
        for arg in args:
            spec.merge(_spec(arg, namespace))
        return spec
    if origin is typing.Literal:
        values = tuple(str(value) for value in args)
        return Spec(enum=tuple(v for v in values if v != ""), empty="" in values)
    if origin in (list, typing.List):  # noqa: UP006 - the SDK's annotations use typing.List
        return Spec(items=_spec(args[0], namespace))
    if origin in (dict, typing.Dict) or _is_mapping(origin, annotation):  # noqa: UP006
        value_spec = _spec(args[1], namespace) if len(args) == 2 else Spec(free=True)
        return Spec(values=value_spec)
    if annotation is type(None):
        return Spec(empty=True)
    if annotation in _SCALARS:
        return Spec(scalars={_SCALARS[annotation]})
    if isinstance(annotation, type) and hasattr(annotation, "__required_keys__"):
        return spec_of(annotation)
    # Untyped objects (`UntypedStripeObject[...]`, `Any`): accept what comes.
    return Spec(free=True)


def _is_mapping(origin: Any, annotation: Any) -> bool:
    if origin is None:
        return False
    name = getattr(origin, "__name__", "") or ""
    return name in ("Mapping", "UntypedStripeObject")


# -- checking a request ----------------------------------------------------------------------


def validate(dotted: str, params: dict[str, Any]) -> None:
    """Raise Stripe's error for the first parameter the SDK's type for this route refuses."""
    _check_hash(spec_of(params_class(dotted)), params, prefix="")


def _name(prefix: str, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def _check_hash(spec: Spec, value: dict[str, Any], prefix: str) -> None:
    assert spec.fields is not None
    for key, item in value.items():
        name = _name(prefix, key)
        nested = spec.fields.get(key)
        if nested is None:
            raise StripeError(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
        _check(nested, item, name)
    for key in sorted(spec.required):
        if key not in value:
            raise parameter_missing(_name(prefix, key))


def _check(spec: Spec, value: Any, name: str) -> None:
    if spec.free:
        return
    if isinstance(value, dict):
        if spec.fields is not None:
            _check_hash(spec, value, name)
        elif spec.values is not None:
            for key, item in value.items():
                _check(spec.values, item, f"{name}[{key}]")
        elif spec.items is not None and all(key.isdigit() for key in value):
            # `items[1]=…` without `items[0]` still names an array's elements.
            for key, item in value.items():
                _check(spec.items, item, f"{name}[{key}]")
        else:
            raise _invalid(spec, value, name)
    elif isinstance(value, list):
        if spec.items is None:
            raise _invalid(spec, value, name)
        for index, item in enumerate(value):
            _check(spec.items, item, f"{name}[{index}]")
    elif not _scalar_ok(spec, str(value)):
        raise _invalid(spec, value, name)


def _scalar_ok(spec: Spec, value: str) -> bool:
    if value == "":
        # An empty value unsets a field (or a whole hash or array).
        return True
    if value in spec.enum:
        return True
    scalars = spec.scalars
    if "integer" in scalars and _is_integer(value):
        return True
    if scalars & {"number", "decimal"} and _is_number(value):
        return True
    if "boolean" in scalars and value in ("true", "false"):
        return True
    # An enum's `|str` in the SDK leaves room for values added later; Stripe itself refuses them.
    return "string" in scalars and not spec.enum


def _is_integer(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _is_number(value: str) -> bool:
    try:
        return Decimal(value).is_finite()
    except InvalidOperation:
        return False


def _invalid(spec: Spec, value: Any, name: str) -> StripeError:
    """Return Stripe's error for a value of the wrong kind."""
    if spec.enum:
        return parameter_invalid(name, f"Invalid {name}: must be one of {_one_of(spec.enum)}")
    if isinstance(value, dict | list):
        expected = "array" if spec.items is not None else _expected(spec)
        given = "hash" if isinstance(value, dict) else "array"
        return parameter_invalid(name, f"Invalid {expected}: {name} was given a {given}")
    if "integer" in spec.scalars:
        return StripeError(
            f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
        )
    return parameter_invalid(name, f"Invalid {_expected(spec)}: {value}")


def _expected(spec: Spec) -> str:
    if spec.fields is not None or spec.values is not None:
        return "hash"
    if spec.items is not None:
        return "array"
    for kind in ("number", "decimal", "boolean", "string"):
        if kind in spec.scalars:
            return kind
    return "value"


def _one_of(values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return f"{values[0]} or {values[1]}"
    return ", ".join(values[:-1]) + f", or {values[-1]}"
