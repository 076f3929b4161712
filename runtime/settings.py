"""Configuration as data: frozen dataclasses loaded from TOML, then environment, then flags.

Every role has one config dataclass whose fields all have defaults that run a local fleet.
`load(cls, path, env, overrides)` fills it: `[section]` tables of the TOML file, then environment
variables `EDGEFLEET_<SECTION>_<KEY>`, then `section.key=value` overrides from the command line.
Nested dataclass fields are sections of their own (e.g. `bus.port`). Any bad value raises one
`ConfigError` whose message names the key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

logger = logging.getLogger(__name__)

C = TypeVar("C")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""

ENV_PREFIX = "EDGEFLEET_"
REPO_ROOT = Path(__file__).resolve().parent.parent
FLEET_DIR = Path(os.environ.get("EDGEFLEET_HOME", REPO_ROOT / ".fleet"))  # local state: store, logs, secrets


def check(condition: bool, key: str, message: str) -> None:
    """Validation inside a config's `__post_init__`. Raises ConfigError naming the key."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def load(
    cls: type[C],
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    section: str = "",
) -> C:
    """Build `cls` from TOML file, environment and `key=value` overrides. Raises ConfigError."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            document = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path}: {error}") from None
        values = dict(document.get(section, document)) if section else document
    env = os.environ if env is None else env
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX):
            dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
            if section and dotted.startswith(section + "_"):
                dotted = dotted[len(section) + 1 :]
            key = _env_key(cls, dotted)
            if key is not None:  # variables for other roles or other tools are not ours to judge
                _set_dotted(values, key, raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        _set_dotted(values, key.strip(), raw.strip())
    return _build(cls, values, prefix="")


def _env_key(cls: type, dotted: str) -> str | None:
    """Map `bus_port` to `bus.port` (and `metrics_store_url` to `metrics.store.url`) through the nested
    sections of cls; None if cls has no such setting."""
    hints = typing.get_type_hints(cls)
    dotted = dotted.replace(".", "_")
    if dotted in hints and not _is_section(hints[dotted]):
        return dotted
    for name, hint in hints.items():
        if _is_section(hint) and dotted.startswith(name + "_"):
            rest = _env_key(hint, dotted[len(name) + 1 :])
            if rest is not None:
                return f"{name}.{rest}"
    return None


def _is_section(hint: object) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _set_dotted(values: dict[str, Any], key: str, raw: str) -> None:
    parts = key.split(".")
    target = values
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    target[parts[-1]] = _RawString(raw)


class _RawString(str):
    """A value from the environment or a flag: still text, parsed by the field's type."""


def _build(cls: type[C], values: Mapping[str, Any], prefix: str) -> C:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name in values:
        if name not in known:
            raise ConfigError(f"{prefix}{name}: unknown setting (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=key + ".")
        else:
            kwargs[name] = _coerce(value, hint, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [o for o in get_args(hint) if o is not type(None)]
        if isinstance(value, _RawString) and value.lower() in ("", "none", "null"):
            return None
        return _coerce(value, options[0], key)
    if origin is tuple:
        items = value.split(",") if isinstance(value, _RawString) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_hint = get_args(hint)[0]
        return tuple(_coerce(_RawString(i.strip()) if isinstance(value, _RawString) else i, item_hint, key) for i in items if i != "")
    if hint is bool:
        if isinstance(value, _RawString):
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value) if isinstance(value, _RawString | int) else _fail()
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value) if isinstance(value, _RawString | int | float) else _fail()
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported setting type {hint!r}")


def _fail() -> Any:
    raise ValueError
