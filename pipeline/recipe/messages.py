"""Recipe error messages: pydantic's errors rendered as `field: what is wrong (what is allowed)`.

A user error is one message naming the file and the field, exit code 2, never a traceback.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from pipeline import specs


class RecipeError(Exception):
    """A user error in a recipe: printed as one message, exit code 2, never a traceback."""


def describe(err: dict[str, Any], data: Any, model: type[BaseModel], kind_tags: set[str]) -> str:
    """One pydantic error as `dotted.field[i]: message`, with the allowed keys or kinds where useful."""
    loc = _loc(err["loc"], kind_tags)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(err["loc"][:-1], data, model, kind_tags)
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{loc}: unknown key.{hint} Allowed keys: {', '.join(allowed)}"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        allowed = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        return f"{loc}.kind: {specs.unknown('kind', ctx.get('tag'), allowed)}"
    if kind == "missing":
        return f"{loc}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    received = err.get("input")
    if kind.endswith(("_type", "_parsing")) and not isinstance(received, (dict, list)):
        return f"{loc}: {msg} (received {received!r})"
    return f"{loc}: {msg}" if loc else msg


def _loc(loc: tuple[Any, ...], kind_tags: set[str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in kind_tags and out.endswith(("model", "]")):
            continue  # the discriminator tag pydantic inserts; the user did not write it
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(loc: tuple[Any, ...], data: Any, model: type[BaseModel], kind_tags: set[str]) -> list[str]:
    """The field names of the model at `loc`, walking the schema the way pydantic did."""
    current: Any = model
    node = data
    for part in loc:
        if part in kind_tags:
            continue  # the discriminator tag pydantic inserts into the location, not a key in the data
        node = node[part] if isinstance(node, (dict, list)) else None
        if isinstance(part, int):
            continue
        current = _model_for(current.model_fields[part].annotation, node)
    return sorted(current.model_fields) if current else []


def _model_for(annotation: Any, node: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args:
        found = _model_for(arg, node)
        if found is None:
            continue
        kind_field = getattr(found, "model_fields", {}).get("kind")
        if kind_field is None or not isinstance(node, dict):
            return found
        if node.get("kind") in getattr(kind_field.annotation, "__args__", ()):
            return found
    return None
