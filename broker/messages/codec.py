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
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

import msgpack

from broker.errors import MessageError

logger = logging.getLogger(__name__)

M = TypeVar("M", bound="Message")

_REGISTRY: dict[str, type[Message]] = {}


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

    def to_bytes(self) -> bytes:
        """Encode to msgpack. Raises MessageError if the result is over the type's size cap."""
        body = {"t": self.TAG, "v": self.VERSION}
        for field in dataclasses.fields(self):
            body[field.name] = _to_wire(getattr(self, field.name))
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
    cap = max_bytes if max_bytes is not None else max(cls.MAX_BYTES for cls in _REGISTRY.values())
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


def _to_wire(value: Any) -> Any:
    if isinstance(value, Message):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_to_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_wire(item) for key, item in value.items()}
    return value


def _build(cls: type[M], body: Any, path: str) -> M:
    if not isinstance(body, dict):
        raise MessageError(f"{path}: expected a map, got {type(body).__name__}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    names = set()
    for field in dataclasses.fields(cls):
        names.add(field.name)
        if field.name in body:
            kwargs[field.name] = _coerce(body[field.name], hints[field.name], f"{path}.{field.name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise MessageError(f"{path}: missing required field {field.name!r}")
    unknown = set(body) - names
    if unknown:
        # Same version, unknown fields: a peer with a bug or an attacker; refuse rather than guess.
        raise MessageError(f"{path}: unknown fields {sorted(map(str, unknown))}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise MessageError(f"{path}: {error}") from None


_HINT_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINT_CACHE:
        _HINT_CACHE[cls] = typing.get_type_hints(cls)
    return _HINT_CACHE[cls]


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except MessageError as error:
                errors.append(str(error))
        raise MessageError("; ".join(errors) or f"{path}: unexpected None")
    if origin is typing.Literal:
        if value not in get_args(hint):
            raise MessageError(f"{path}: {value!r} is not one of {list(get_args(hint))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise MessageError(f"{path}: expected a list, got {type(value).__name__}")
        args = get_args(hint)
        item_hint = args[0] if args else Any
        items = [_coerce(item, item_hint, f"{path}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise MessageError(f"{path}: expected a map, got {type(value).__name__}")
        key_hint, value_hint = get_args(hint) or (Any, Any)
        return {
            _coerce(k, key_hint, f"{path}<key>"): _coerce(v, value_hint, f"{path}[{k!r}]")
            for k, v in value.items()
        }
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, Message):
        return _build(hint, value, path)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MessageError(f"{path}: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise MessageError(f"{path}: {value} is not finite")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{path}: expected an integer, got {type(value).__name__}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise MessageError(f"{path}: expected a boolean, got {type(value).__name__}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise MessageError(f"{path}: expected a string, got {type(value).__name__}")
        return value
    if hint is bytes:
        if not isinstance(value, bytes):
            raise MessageError(f"{path}: expected bytes, got {type(value).__name__}")
        return value
    supertype = getattr(hint, "__supertype__", None)  # NewType
    if supertype is not None:
        return _coerce(value, supertype, path)
    raise MessageError(f"{path}: no decoder for type {hint!r}")


def require(condition: bool, message: str) -> None:
    """Range check for `__post_init__`: raises ValueError (turned into MessageError on decode)."""
    if not condition:
        raise ValueError(message)
