"""Settings of a run from text: ``key=value`` overrides of a config dataclass (``--set`` on the command line).

    cfg = apply_overrides(TASK_DEFAULTS["point"], ["kl_step=2.5", "train_window=None", "encoder=conv"])

Each value is parsed by the field's type (``int``, ``float``, ``bool``, ``str``, ``X | None``, tuples
and lists as comma-separated items); the dataclass then validates the result itself (its
``__post_init__`` runs again), so a value it rejects raises its own :class:`ValueError`. A field
holding a nested config dataclass is set field by field with a dotted key (``exploration.kl_step=2``).
Every problem raises :class:`SettingsError` (a ``ValueError``) with a message meant for a user.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Iterable, Literal, Union

NONE_WORDS = ("none", "null")
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class SettingsError(ValueError):
    """A ``key=value`` setting that cannot be applied (unknown key, unreadable or rejected value)."""


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_in(tp) -> type | None:
    """The dataclass a field's type holds (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a) and isinstance(a, type)]
        return found[0] if len(found) == 1 else None
    return None


def config_fields(cls) -> dict[str, Any]:
    """Every settable key of a config dataclass (class or instance) -> its type, in declaration order;
    the fields of a nested config dataclass appear as ``outer.inner``."""
    cls = cls if isinstance(cls, type) else type(cls)
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints.get(f.name, Any)
        out[f.name] = tp
        inner = _dataclass_in(tp)
        if inner is not None:
            out.update({f"{f.name}.{k}": v for k, v in config_fields(inner).items()})
    return out


def type_name(tp) -> str:
    """A short readable name of a field type (``int``, ``float | None``, ``tuple[int, int, int]``)."""
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None and args:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def parse_value(text: str, tp) -> Any:
    """``text`` as a value of type ``tp``; raises ValueError when it is not one."""
    raw = text
    text = text.strip()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return raw
    if tp is type(None):
        if text.lower() in NONE_WORDS:
            return None
        raise ValueError(f"expected None, got {raw!r}")
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in NONE_WORDS:
            return None
        if _dataclass_in(tp) is not None:
            raise ValueError("a group of settings: set its fields one by one (NAME.FIELD=VALUE), or NAME=None")
        for a in args:
            if a is type(None):
                continue
            try:
                return parse_value(raw, a)
            except ValueError:
                pass
        raise ValueError(f"expected {type_name(tp)}, got {raw!r}")
    if origin is Literal:
        for a in args:
            try:
                if parse_value(raw, type(a)) == a:
                    return a
            except ValueError:
                pass
        raise ValueError(f"expected one of {', '.join(repr(a) for a in args)}, got {raw!r}")
    if tp is bool:
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:  # 1e3, 2000.0: whole numbers written as floats
            value = float(text)
        except ValueError:
            value = None
        if value is not None and value.is_integer():
            return int(value)
        raise ValueError(f"expected an integer, got {raw!r}")
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if tp is str:
        return raw
    if origin in (tuple, list):
        inner = text[1:-1] if text[:1] + text[-1:] in ("()", "[]") else text
        items = [s for s in (p.strip() for p in inner.split(",")) if s]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values, got {raw!r}")
            return tuple(parse_value(s, a) for s, a in zip(items, args))
        item_type = args[0] if args else str
        values = [parse_value(s, item_type) for s in items]
        return tuple(values) if origin is tuple else values
    if _dataclass_in(tp) is not None:
        raise ValueError("a group of settings: set its fields one by one (NAME.FIELD=VALUE)")
    raise ValueError(f"a {type_name(tp)} cannot be set from text")


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, str]]:
    """``["k=v", ...]`` -> ``[(k, v), ...]``; raises SettingsError for an item without ``=``."""
    pairs = []
    for item in overrides:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f"setting {item!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _unknown(key: str, cls: type, valid: list[str]) -> SettingsError:
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return SettingsError(f"unknown setting {key!r} for {cls.__name__}{hint}; valid settings: {', '.join(valid)}")


def apply_overrides(cfg, overrides: Iterable[str]):
    """A copy of the config dataclass ``cfg`` with the ``key=value`` settings applied, in order (a
    later setting of the same key wins). Raises :class:`SettingsError` for an unknown key, a value of
    the wrong type, or a value the dataclass rejects (its own message)."""
    cls = type(cfg)
    fields = config_fields(cls)
    values: dict[str, Any] = {}
    for key, text in parse_overrides(overrides):
        if key not in fields:
            raise _unknown(key, cls, list(fields))
        try:
            values[key] = parse_value(text, fields[key])
        except ValueError as err:
            raise SettingsError(f"setting {key}={text}: {err} ({type_name(fields[key])})") from None
    return _replace(cfg, values)


def _replace(cfg, values: dict[str, Any]):
    """``dataclasses.replace`` with dotted keys for nested config dataclasses; the dataclass's own
    validation errors become SettingsError."""
    direct = {k: v for k, v in values.items() if "." not in k}
    nested: dict[str, dict[str, Any]] = {}
    for k, v in values.items():
        if "." in k:
            outer, inner = k.split(".", 1)
            nested.setdefault(outer, {})[inner] = v
    hints = _hints(type(cfg))
    for outer, inner_values in nested.items():
        current = direct[outer] if outer in direct else getattr(cfg, outer)
        if current is None:  # start from the nested dataclass's own defaults
            current = _dataclass_in(hints[outer])()
        direct[outer] = _replace(current, inner_values)
    if not direct:
        return cfg
    try:
        return dataclasses.replace(cfg, **direct)
    except (ValueError, TypeError) as err:
        raise SettingsError(str(err)) from None


def changed_settings(cfg, overrides: Iterable[str]) -> dict[str, Any]:
    """The settings ``overrides`` make, by key, as values of their fields' types (for checking a
    stored run's config: ``asdict(cfg)`` holds the same values under the same dotted paths)."""
    fields = config_fields(cfg)
    out = {}
    for key, text in parse_overrides(overrides):
        if key not in fields:
            raise _unknown(key, type(cfg), list(fields))
        out[key] = parse_value(text, fields[key])
    return out


def lookup(config: dict, dotted: str, default=None):
    """``config["a"]["b"]`` for ``"a.b"`` in a config dict (``asdict`` of a config); ``default`` if absent."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value
