"""Versioned msgpack codec for frozen message dataclasses, with validation on decode and a size cap per type.

Every message is a frozen dataclass subclassing `Message`. On the wire it is a msgpack map
`{"t": <type tag>, "v": <version>, <field>: <value>, ...}`. Decoding checks the tag, the version,
the size cap, every field's type (recursively through lists, dicts, optionals and nested messages)
and then the class's own range checks in `__post_init__`. Anything wrong raises `MessageError`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

import msgpack

from broker.errors import MessageError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound="Message")

_REGISTRY: dict[str, type[Message]] = {}
_LARGEST_CAP = [0]  # the biggest MAX_BYTES of any registered type: what an untyped decode accepts


class Message:
    """Base of every bus message: subclasses are frozen slotted dataclasses setting TAG, VERSION, MAX_BYTES."""

    __slots__ = ()

    TAG: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    MAX_BYTES: ClassVar[int] = 64 * 1024  # encoded size cap; bigger payloads are refused both ways

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # dataclass(slots=True) builds a second class; the slotted one registers last and wins.
        if cls.TAG:
            _REGISTRY[cls.TAG] = cls
            _LARGEST_CAP[0] = max(_LARGEST_CAP[0], cls.MAX_BYTES)

    def to_bytes(self) -> bytes:
        """Encode to msgpack. Raises MessageError if the result is over the type's size cap."""
        body = {"t": self.TAG, "v": self.VERSION, **_wire_fields(self)}
        data = msgpack.packb(body, use_bin_type=True)
        if len(data) > self.MAX_BYTES:
            raise MessageError(f"{self.TAG}: encoded size {len(data)} B over the cap of {self.MAX_BYTES} B")
        return data

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        """Decode and validate a payload of exactly this type. Raises MessageError."""
        message = decode(data, max_bytes=cls.MAX_BYTES)
        if not isinstance(message, cls):
            raise MessageError(f"expected {cls.TAG!r}, got {message.TAG!r}")
        return message


def decode(data: bytes, max_bytes: int | None = None) -> Message:
    """Decode any registered message type. Raises MessageError for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError(f"payload must be bytes, got {type(data).__name__}")
    cap = max_bytes if max_bytes is not None else _LARGEST_CAP[0]
    if len(data) > cap:
        raise MessageError(f"payload of {len(data)} B over the cap of {cap} B")
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types for garbage
        raise MessageError(f"not valid msgpack: {error}") from None
    if not isinstance(body, dict):
        raise MessageError(f"payload must be a map, got {type(body).__name__}")
    tag = body.pop("t", None)
    cls = _REGISTRY.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {tag!r}")
    if len(data) > cls.MAX_BYTES:
        raise MessageError(f"{tag}: payload of {len(data)} B over the cap of {cls.MAX_BYTES} B")
    version = body.pop("v", None)
    if version != cls.VERSION:
        raise MessageError(f"{tag}: unsupported version {version!r} (this node speaks {cls.VERSION})")
    return _build(cls, body, path=tag)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_NONE_DEFAULTS: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _none_by_default(cls: type) -> frozenset[str]:
    names = _NONE_DEFAULTS.get(cls)
    if names is None:
        names = _NONE_DEFAULTS[cls] = frozenset(f.name for f in dataclasses.fields(cls) if f.default is None)
    return names


def _wire_fields(message: Message) -> dict[str, Any]:
    """Field name -> wire value; a field left at its None default is not sent (the decoder restores it)."""
    skip = _none_by_default(type(message))
    fields = ((name, getattr(message, name)) for name in _field_names(type(message)))
    return {name: _to_wire(value) for name, value in fields if value is not None or name not in skip}


def _to_wire(value: Any) -> Any:
    if isinstance(value, Message):
        return _wire_fields(value)
    if isinstance(value, tuple | list):
        return [_to_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_wire(item) for key, item in value.items()}
    return value


# Decoding runs per received message (thousands per second on the token stream), so each type's
# hints are compiled once into a plan of checker functions instead of being re-inspected per field.
Checker = Callable[[Any, str], Any]  # (wire value, path for errors) -> checked value; raises MessageError


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    check: Checker
    required: bool


_PLANS: dict[type, tuple[tuple[_FieldPlan, ...], frozenset[str]]] = {}


def _plan(cls: type) -> tuple[tuple[_FieldPlan, ...], frozenset[str]]:
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        fields = tuple(
            _FieldPlan(f.name, _checker(hints[f.name]),
                       f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls))
        plan = _PLANS[cls] = (fields, frozenset(f.name for f in fields))
    return plan


def _build(cls: type[M], body: Any, path: str) -> M:
    if not isinstance(body, dict):
        raise MessageError(f"{path}: expected a map, got {type(body).__name__}")
    fields, names = _plan(cls)
    kwargs: dict[str, Any] = {}
    for field in fields:
        if field.name in body:
            kwargs[field.name] = field.check(body[field.name], f"{path}.{field.name}")
        elif field.required:
            raise MessageError(f"{path}: missing required field {field.name!r}")
    if len(kwargs) != len(body):
        unknown = set(body) - names
        # Same version, unknown fields: a peer with a bug or an attacker; refuse rather than guess.
        raise MessageError(f"{path}: unknown fields {sorted(map(str, unknown))}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise MessageError(f"{path}: {error}") from None


def _checker(hint: Any) -> Checker:
    """The function that validates (and converts) a wire value for type hint `hint`."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return _union_checker(get_args(hint))
    if origin is typing.Literal:
        allowed = get_args(hint)

        def check_literal(value: Any, path: str) -> Any:
            if value not in allowed:
                raise MessageError(f"{path}: {value!r} is not one of {list(allowed)}")
            return value
        return check_literal
    if origin in (tuple, list):
        args = get_args(hint)
        check_item = _checker(args[0] if args else Any)
        as_tuple = origin is tuple

        def check_sequence(value: Any, path: str) -> Any:
            if not isinstance(value, list | tuple):
                raise MessageError(f"{path}: expected a list, got {type(value).__name__}")
            items = [check_item(item, f"{path}[{i}]") for i, item in enumerate(value)]
            return tuple(items) if as_tuple else items
        return check_sequence
    if origin is dict:
        key_hint, value_hint = get_args(hint) or (Any, Any)
        check_key, check_value = _checker(key_hint), _checker(value_hint)

        def check_map(value: Any, path: str) -> Any:
            if not isinstance(value, dict):
                raise MessageError(f"{path}: expected a map, got {type(value).__name__}")
            return {check_key(k, f"{path}<key>"): check_value(v, f"{path}[{k!r}]") for k, v in value.items()}
        return check_map
    if hint is Any:
        return lambda value, path: value
    if isinstance(hint, type) and issubclass(hint, Message):
        return lambda value, path: _build(hint, value, path)
    if hint in _SCALAR_CHECKERS:
        return _SCALAR_CHECKERS[hint]
    supertype = getattr(hint, "__supertype__", None)  # NewType
    if supertype is not None:
        return _checker(supertype)

    def no_decoder(value: Any, path: str) -> Any:
        raise MessageError(f"{path}: no decoder for type {hint!r}")
    return no_decoder


def _union_checker(options: tuple[Any, ...]) -> Checker:
    nullable = type(None) in options
    checks = [_checker(option) for option in options if option is not type(None)]
    # A value whose exact type is one of the options keeps it: an int in `float | int` stays an int (a metric
    # field InfluxDB stored as an integer must not come back as a float after a trip through the bus or spool).
    exact = frozenset(option for option in options if option in (bool, int, str, bytes))

    def check_union(value: Any, path: str) -> Any:
        if value is None and nullable:
            return None
        if type(value) in exact:
            return value
        errors = []
        for check in checks:
            try:
                return check(value, path)
            except MessageError as error:
                errors.append(str(error))
        raise MessageError("; ".join(errors) or f"{path}: unexpected None")
    return check_union


def _check_float(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MessageError(f"{path}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise MessageError(f"{path}: {value} is not finite")
    return float(value)


def _check_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{path}: expected an integer, got {type(value).__name__}")
    return value


def _exact_type_checker(expected: type, noun: str) -> Checker:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, expected):
            raise MessageError(f"{path}: expected {noun}, got {type(value).__name__}")
        return value
    return check


_SCALAR_CHECKERS: dict[Any, Checker] = {
    float: _check_float,
    int: _check_int,
    bool: _exact_type_checker(bool, "a boolean"),
    str: _exact_type_checker(str, "a string"),
    bytes: _exact_type_checker(bytes, "bytes"),
}


def require(condition: bool, message: str) -> None:
    """Range check for `__post_init__`: raises ValueError (turned into MessageError on decode)."""
    if not condition:
        raise ValueError(message)
