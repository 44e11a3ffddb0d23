"""Typed hand-offs across the process boundary (standard library only, so every tool env has it).

A request or result is a keyword-only dataclass. It crosses as JSON `{"type": name, "fields": {...}}`
and is checked field by field when written and when read, on both sides: a field that is missing,
unknown or of the wrong type fails at the boundary, naming the class and the field, instead of
drifting silently (a key sent and never read, a value read that was never sent).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union


class HandoffError(ValueError):
    """A message that does not match its declared dataclass."""


def encode(obj: Any) -> dict[str, Any]:
    """`obj` (a dataclass instance) as checked JSON data."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise HandoffError(f"a hand-off must be a dataclass instance, not {type(obj).__name__}")
    return {"type": type(obj).__name__, "fields": _fields_to_json(obj)}


def decode(data: Any, expected: type | tuple[type, ...]) -> Any:
    """The instance of one of `expected` that `data` (from `encode`) describes, checked."""
    classes = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(data, dict) or set(data) != {"type", "fields"}:
        raise HandoffError(f"not a hand-off message (expected {{'type', 'fields'}}): {str(data)[:200]}")
    by_name = {cls.__name__: cls for cls in classes}
    if data["type"] not in by_name:
        raise HandoffError(f"got a {data['type']!r}, expected {' or '.join(by_name)}")
    return _from_json(data["fields"], by_name[data["type"]], data["type"])


def write(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename): a reader never sees half a message."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(encode(obj), indent=2, sort_keys=True))
    os.replace(tmp, path)


def read(path: Path, expected: type | tuple[type, ...]) -> Any:
    return decode(json.loads(path.read_text()), expected)


def to_plain(obj: Any) -> Any:
    """The dataclass as plain JSON data (what result files and reports store), checked."""
    return _fields_to_json(obj)


def from_plain(data: Any, cls: type) -> Any:
    return _from_json(data, cls, cls.__name__)


def serve(*handlers: Callable[[Any], Any]) -> None:
    """A worker's main: read `--request`, call the handler whose request type it is, write `--result`.

    Each handler is annotated `def handle(request: SomeRequest) -> SomeResult`.
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--request", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    args = parser.parse_args()
    signatures = {}
    for handler in handlers:
        hints = typing.get_type_hints(handler)
        request_type = next(hint for name, hint in hints.items() if name != "return")
        signatures[request_type] = (handler, hints["return"])
    request = read(args.request, tuple(signatures))
    handler, result_type = signatures[type(request)]
    result = handler(request)
    if not isinstance(result, result_type):
        raise HandoffError(f"{handler.__name__} returned a {type(result).__name__}, not a {result_type.__name__}")
    write(args.result, result)


# --- checking ---------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields_to_json(obj: Any) -> dict[str, Any]:
    cls = type(obj)
    hints = _hints(cls)
    return {f.name: _value_to_json(getattr(obj, f.name), hints[f.name], f"{cls.__name__}.{f.name}")
            for f in dataclasses.fields(obj)}


def _value_to_json(value: Any, annotation: Any, where: str) -> Any:
    _check(value, annotation, where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields_to_json(value)
    if isinstance(value, (list, tuple)):
        item = _args(annotation)[0] if _origin(annotation) in (list, tuple) else Any
        return [_value_to_json(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        item = _args(annotation)[1] if _origin(annotation) is dict else Any
        return {k: _value_to_json(v, item, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def _from_json(data: Any, cls: type, where: str) -> Any:
    if not isinstance(data, dict):
        raise HandoffError(f"{where}: expected the fields of {cls.__name__}, got {type(data).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise HandoffError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}"
                           f" (fields: {', '.join(fields)})")
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise HandoffError(f"{where}: {cls.__name__} is missing field(s) {', '.join(missing)}")
    values = {name: _value_from_json(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def _value_from_json(value: Any, annotation: Any, where: str) -> Any:
    origin, args = _origin(annotation), _args(annotation)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _value_from_json(value, option, where)
            except HandoffError as exc:
                errors.append(str(exc))
        raise HandoffError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {annotation}")
    if dataclasses.is_dataclass(annotation):
        return _from_json(value, annotation, where)
    if origin in (list, tuple) and isinstance(value, list):
        item = args[0] if args else Any
        return [_value_from_json(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        item = args[1] if args else Any
        return {k: _value_from_json(v, item, f"{where}[{k!r}]") for k, v in value.items()}
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    _check(value, annotation, where)
    return value


def _check(value: Any, annotation: Any, where: str) -> None:
    origin, args = _origin(annotation), _args(annotation)
    if annotation is Any:
        return
    if origin is Union:
        if not any(_fits(value, a) for a in args):
            raise HandoffError(f"{where}: {_shown(value)} is not {_name(annotation)}")
        return
    if not _fits(value, annotation):
        raise HandoffError(f"{where}: {_shown(value)} is not {_name(annotation)}")


def _fits(value: Any, annotation: Any) -> bool:
    origin, args = _origin(annotation), _args(annotation)
    if annotation is Any:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if origin is Union:
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, annotation)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _fits(v, args[1]) for k, v in value.items())
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    raise HandoffError(f"unsupported hand-off field type {annotation!r}")


def _origin(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    return Union if origin is types.UnionType else origin


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _shown(value: Any) -> str:
    text = repr(value)
    return (text[:80] + "…") if len(text) > 80 else text
