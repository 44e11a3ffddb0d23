"""The fixed texts divergence and parity read: a standard-library module's source or a file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.recipe.messages import RecipeError
from pipeline.recipe.schema import FixedText


def text_file(config: FixedText) -> Path | None:
    """The text's file on this machine ('stdlib:difflib' is the standard library's difflib.py), or None."""
    if config.text.startswith("stdlib:"):
        try:
            spec = importlib.util.find_spec(config.text.removeprefix("stdlib:"))
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        return Path(spec.origin)
    return Path(config.text) if Path(config.text).is_file() else None


def text_path(config: FixedText) -> Path:
    path = text_file(config)
    if path is None:  # load_recipe checked it; the file went away since
        raise RecipeError(f"text {config.text!r} is no longer there")
    return path
