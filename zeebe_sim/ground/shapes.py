"""Checking decoded msgpack data against a declared shape (a type annotation).

Theory of operation
-------------------
The wire vocabulary declares its fields with ordinary annotations: ``int``, ``str``, the typed
ids of :mod:`zeebe_sim.ground.ids`, enums, ``list[...]``, ``dict[..., ...]``, fixed-length
tuples (lists on the wire), unions, nested attrs classes and ``TypedDict`` schemas for engine
values. :func:`checker` turns an annotation into a function once (cached) that takes what
msgpack decoded and either returns the typed value (an enum member for its name, an attrs
instance for its map) or raises :class:`ProtocolError`
naming the path of the bad part. Nothing malformed gets past it, so nothing behind it (the
broker, the engine) has to guard against a wrong type, a missing or extra field, or an integer a
Java long cannot hold.

The rules, the same at every depth:
- every integer is within int64 (Zeebe's ``long``); a bool is never an int;
- the typed ids have their ranges (:data:`ID_RANGES`); ``Annotated[int, IntRange(lo, hi)]``
  narrows further (time-outs, counts);
- an attrs class or a ``TypedDict`` is a map with exactly its fields: required ones present,
  no others;
- ``Any`` is JSON-like data: None, bool, int64, float, str, bytes, lists and maps with string
  keys, nested at most :data:`NESTING_DEPTH_MAX` deep (deeper would exhaust the recursion of
  whoever walks it next).
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, NewType, NotRequired, Required, Union

import attrs

from zeebe_sim.ground.errors import ProtocolError
from zeebe_sim.ground.ids import (
    INT64_MAX,
    INT64_MIN,
    BackupId,
    Key,
    NodeId,
    PartitionId,
    Position,
)

NESTING_DEPTH_MAX = 64

Check = Callable[[Any, str], Any]


@attrs.frozen
class IntRange:
    """``Annotated[int, IntRange(lo, hi)]``: an integer in ``[lo, hi]``."""

    lo: int = INT64_MIN
    hi: int = INT64_MAX


# The ranges of the typed ids on the wire. -1 means "none" for keys, positions and checkpoint
# ids (Zeebe's convention: no key, no source position, NO_CHECKPOINT).
ID_RANGES: dict[object, IntRange] = {
    PartitionId: IntRange(1, INT64_MAX),
    NodeId: IntRange(0, INT64_MAX),
    BackupId: IntRange(-1, INT64_MAX),
    Position: IntRange(-1, INT64_MAX),
    Key: IntRange(-1, INT64_MAX),
}


@attrs.frozen
class CheckedByCaller:
    """``Annotated[dict[str, Any], CheckedByCaller(why)]``: only "a map" here; the decoder
    checks the contents against a schema it picks from other fields (a command's value by its
    value type and intent), so the contents are walked once, not twice."""

    why: str


# The id of a backup to take: never the -1 "none" nor 0 (REFERENCE.md §1: > 0).
NewBackupId = Annotated[BackupId, IntRange(1, INT64_MAX)]


def check(hint: Any, value: Any, path: str) -> Any:
    """``value`` checked against ``hint`` (see the module docstring).

    Raises:
        ProtocolError: the value does not have the declared shape.
    """
    return checker(hint)(value, path)


@functools.cache
def checker(hint: Any) -> Check:
    """The (cached) check function for an annotation."""
    if hint is Any:
        return lambda value, path: _check_json(value, path, 0)
    if hint is type(None) or hint is None:
        return _exact(type(None), "nil")
    if hint is bool:
        return _exact(bool, "a boolean")
    if hint is int:
        return _int(IntRange())
    if hint is float:
        return _float
    if hint is str:
        return _exact(str, "a string")
    if hint is bytes:
        return _exact(bytes, "bytes")
    if isinstance(hint, NewType):
        return _int(ID_RANGES[hint]) if hint in ID_RANGES else checker(hint.__supertype__)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint)
    if isinstance(hint, type) and attrs.has(hint):
        return _struct(hint)
    if typing.is_typeddict(hint):
        return _typed_dict(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (NotRequired, Required):  # a TypedDict key's presence, not its shape
        return checker(args[0])
    if origin is Annotated:
        if any(isinstance(a, CheckedByCaller) for a in args[1:]):
            return _exact(dict, "a map")
        ranges = [a for a in args[1:] if isinstance(a, IntRange)]
        if ranges and (args[0] is int or isinstance(args[0], NewType)):
            return _int(ranges[0])
        return checker(args[0])
    if origin is Literal:
        return _literal(args)
    if origin in (Union, types.UnionType):
        return _union(tuple(checker(a) for a in args), hint)
    if origin is list:
        return _list(checker(args[0]))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return _tuple(tuple(checker(a) for a in args))
    if origin is dict:
        return _dict(checker(args[0]), checker(args[1]))
    raise TypeError(f"no wire shape for {hint!r}")  # our bug: an undeclarable field type


def _fail(path: str, expected: str, value: Any) -> ProtocolError:
    shown = type(value).__name__ if not isinstance(value, int | str) else repr(value)[:40]
    return ProtocolError(f"{path}: expected {expected}, got {shown}")


def _exact(kind: type, expected: str) -> Check:
    def check_exact(value: Any, path: str) -> Any:
        if type(value) is not kind:
            raise _fail(path, expected, value)
        return value

    return check_exact


def _int(bounds: IntRange) -> Check:
    expected = f"an integer in [{bounds.lo}, {bounds.hi}]"

    def check_int(value: Any, path: str) -> Any:
        if type(value) is not int or not bounds.lo <= value <= bounds.hi:
            raise _fail(path, expected, value)
        return value

    return check_int


def _float(value: Any, path: str) -> Any:
    if type(value) is float or (type(value) is int and INT64_MIN <= value <= INT64_MAX):
        return value
    raise _fail(path, "a number", value)


def _enum(kind: type[enum.Enum]) -> Check:
    names = {m.value: m for m in kind}

    def check_enum(value: Any, path: str) -> Any:
        if type(value) is not str or value not in names:
            raise _fail(path, f"one of {sorted(names)}", value)
        return names[value]

    return check_enum


def _literal(allowed: tuple[Any, ...]) -> Check:
    def check_literal(value: Any, path: str) -> Any:
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise _fail(path, f"one of {list(allowed)}", value)
        return value

    return check_literal


def _union(options: tuple[Check, ...], hint: Any) -> Check:
    def check_union(value: Any, path: str) -> Any:
        errors = []
        for option in options:
            try:
                return option(value, path)
            except ProtocolError as exc:
                errors.append(exc.message)
        # The most specific complaint: the one that got deepest into the value.
        raise ProtocolError(max(errors, key=lambda e: len(e.split(":")[0])))

    return check_union


def _list(item: Check) -> Check:
    def check_list(value: Any, path: str) -> Any:
        if type(value) is not list:
            raise _fail(path, "a list", value)
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return check_list


def _tuple(items: tuple[Check, ...]) -> Check:
    expected = f"a list of {len(items)}"

    def check_tuple(value: Any, path: str) -> Any:
        if type(value) is not list or len(value) != len(items):
            raise _fail(path, expected, value)
        return tuple(
            item(v, f"{path}[{i}]") for i, (item, v) in enumerate(zip(items, value, strict=True))
        )

    return check_tuple


def _dict(key: Check, item: Check) -> Check:
    def check_dict(value: Any, path: str) -> Any:
        if type(value) is not dict:
            raise _fail(path, "a map", value)
        return {key(k, f"{path} key"): item(v, f"{path}[{k!r}]") for k, v in value.items()}

    return check_dict


def _fields(
    name: str, value: Any, path: str, fields: dict[str, tuple[Check, bool]]
) -> dict[str, Any]:
    """A map with exactly ``fields`` (name -> (check, required)), checked."""
    if type(value) is not dict:
        raise _fail(path, f"a {name} map", value)
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise ProtocolError(f"{path}: unknown fields {sorted(map(repr, unknown))}")
    result: dict[str, Any] = {}
    for field, (check_field, required) in fields.items():
        if field in value:
            result[field] = check_field(value[field], f"{path}.{field}")
        elif required:
            raise ProtocolError(f"{path}: missing field {field!r}")
    return result


def struct_fields(cls: type) -> dict[str, tuple[Check, bool]]:
    """An attrs class's fields as (check, required), in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: (checker(hints[f.name]), f.default is attrs.NOTHING) for f in attrs.fields(cls)}


def _struct(cls: type) -> Check:
    fields = struct_fields(cls)

    def check_struct(value: Any, path: str) -> Any:
        return cls(**_fields(cls.__name__, value, path, fields))

    return check_struct


def _typed_dict(cls: Any) -> Check:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {k: (checker(h), k in cls.__required_keys__) for k, h in hints.items()}

    def check_typed_dict(value: Any, path: str) -> Any:
        return _fields(cls.__name__, value, path, fields)

    return check_typed_dict


def _check_json(value: Any, path: str, depth: int) -> Any:
    kind = type(value)
    if kind in (str, bool, float, bytes) or value is None:
        return value
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _fail(path, "an integer within int64", value)
        return value
    if depth >= NESTING_DEPTH_MAX:
        raise ProtocolError(f"{path}: nested deeper than {NESTING_DEPTH_MAX}")
    if kind is list:
        for i, v in enumerate(value):
            _check_json(v, f"{path}[{i}]", depth + 1)
        return value
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise _fail(f"{path} key", "a string", k)
            _check_json(v, f"{path}[{k!r}]", depth + 1)
        return value
    raise _fail(path, "plain data", value)
