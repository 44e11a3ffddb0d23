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
    tag_next = False  # the part after a discriminated union's place is the tag pydantic inserts
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif tag_next and part in kind_tags and out.endswith(("model", "]")):
            tag_next = False
            continue  # the discriminator tag; the user did not write it (a key of the same name they did)
        else:
            out += f".{part}" if out else str(part)
        tag_next = True
    return out


def _allowed_keys(loc: tuple[Any, ...], data: Any, model: type[BaseModel], kind_tags: set[str]) -> list[str]:
    """The field names of the model at `loc`, walking the schema the way pydantic did."""
    current: Any = model
    annotation: Any = None  # of the field being walked: a list's item model is chosen by the item
    node = data
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and -len(node) <= part < len(node) else None
            current = _model_for(annotation, node) if annotation is not None else None
            previous = part
            continue
        if part in kind_tags and (isinstance(previous, int) or previous == "model"):
            previous = None
            continue  # the discriminator tag pydantic inserts into the location, not a key in the data
        previous = part
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        annotation = field.annotation
        current = _model_for(annotation, node)
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
