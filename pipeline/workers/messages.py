"""Every worker's request and result, as keyword-only dataclasses (standard library only).

The orchestrator builds a request, `ToolEnv.run_worker` sends it and returns the request's declared
`result` type; the worker reads the same classes. Both sides check every field (`handoff.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MaterializedModel:
    """What the source stage wrote: an HF model directory, and what transformers saw in it."""

    architecture: str
    hidden_size: int
    intermediate_size: int | None
    num_layers: int
    vocab_size: int
    n_params: int
    transformers_version: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class TokenLogprobs:
    """log P(t_i | t_<i) for i ≥ 1 of `token_ids`."""

    token_ids: list[int]
    token_logprobs: list[float]
    seconds: float


@dataclass(frozen=True, kw_only=True)
class GGUFTensor:
    name: str
    type: str
    shape: list[int]


@dataclass(frozen=True, kw_only=True)
class GGUFFile:
    """What a GGUF file holds, read back from it (k-quants fall back silently on some widths)."""

    file_bytes: int
    n_params: int
    tensor_bytes: int
    bits_per_weight: float | None
    tensor_type_counts: dict[str, int]
    tensor_types_by_role: dict[str, dict[str, int]]
    tensors: list[GGUFTensor]
    seconds: float = 0.0
    peak_rss_mb: float | None = None


@dataclass(frozen=True, kw_only=True)
class OneshotResult:
    seconds: float
    n_params: int
    peak_rss_mb: float
    calibration_sha256: str | None  # the samples oneshot actually read
    tool_versions: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class DivergenceMetrics:
    """Next-token divergence of a variant vs its reference on a fixed text; every method reports these."""

    n_tokens: int
    kld_mean: float
    kld_median: float
    kld_p99: float
    kld_max: float
    top1_agreement: float
    flip_rate: float
    ppl_reference: float
    ppl_variant: float
    ppl_ratio: float
    windows: int
    window_tokens: int
    method: str
    seconds: float
    top_k: int | None = None  # served methods: logprobs per position
    reference_tail_mass: float | None = None  # served methods: reference mass outside its top-k


@dataclass(frozen=True, kw_only=True)
class AlignmentSummary:
    """The alignment probe's verdict: does the scorer read each token where the server predicts it?"""

    passed: bool
    n: int
    median_abs_diff: float | None
    max_abs_diff: float | None
    confident_mismatches: int | None
    near_tie_flips: int | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class TaskScore:
    value: float  # the gate's metric, averaged over the items
    metric: str
    n: int
    samples_file: str  # per-item results, in doc order, beside the result
    stopped: str | None = None  # sequential evaluation: why it stopped where it did (n of its items)


@dataclass(frozen=True, kw_only=True)
class SubtaskInfo:
    """One lm-eval task as its config declares it (nothing downloaded)."""

    name: str
    output_type: str
    metrics: list[str]
    filters: list[str]
    data: str  # local | cached | needs-hub | custom
    data_detail: str
    files: list[str]  # config and local data files: what decides its items


@dataclass(frozen=True, kw_only=True)
class TaskInfo:
    """A task reference looked up in lm-eval's index: a task, or a group and its member tasks."""

    index: int
    error: str | None  # unknown name or an unreadable YAML
    kind: str  # task | group | tag
    spec: str  # what lm-eval loads
    include_path: str | None
    cwd: str  # where relative data files resolve
    subtasks: list[SubtaskInfo]
    close: list[str] = field(default_factory=list)  # for an unknown name: the closest names lm-eval knows


@dataclass(frozen=True, kw_only=True)
class TaskLookup:
    tasks: list[TaskInfo]


@dataclass(frozen=True, kw_only=True)
class StoppingRule:
    """Sequential evaluation of one task (`measure/sequential.py`): score its items in `order`, look
    after each of `sizes` items, stop once the gate against the reference's values is settled."""

    order: list[int]  # doc ids, in the seeded order the looks take them
    sizes: list[int]
    alphas: list[float]
    confidence: float
    iters: int
    tolerance: float
    reference_values: list[float]  # the reference's values, in `order`


@dataclass(frozen=True, kw_only=True)
class EvalTask:
    """One task reference as the eval worker runs it."""

    label: str
    spec: str  # a task or group name lm-eval loads
    include_path: str | None
    cwd: str
    subtasks: list[str]
    metric: str
    filter: str
    num_fewshot: int | None = None
    limit: int | None = None
    gen_kwargs: dict[str, Any] | None = None
    apply_chat_template: bool = False
    pooled: bool = False  # a group gated on its pooled items rather than per member
    stopping: StoppingRule | None = None  # sequential evaluation: stop once the gate is settled


@dataclass(frozen=True, kw_only=True)
class EvalOutput:
    alignment: AlignmentSummary
    tasks: dict[str, TaskScore]  # gated task label (label/member for groups gated per member) -> score
    seconds: float
    lm_eval_version: str | None = None
    lm_eval_output: str | None = None  # folder of lm-eval's own results and samples files


# A request the load generator itself cut off when its level hit the time limit: not the server's doing.
CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One request of a load level, as the load generator timed it (seconds on one clock)."""

    ok: bool
    start_s: float
    end_s: float
    first_token_s: float | None = None
    last_token_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    itl_s: list[float] = field(default_factory=list)  # every gap between streamed tokens, when recorded
    error_class: str | None = None  # timeout, connection, http_4xx, http_5xx, cancelled, other
    error: str | None = None
    warmup: bool = False  # sent to warm the server up, not measured


@dataclass(frozen=True, kw_only=True)
class LoadLevelRecords:
    """Every request of one load level, warm-up included; the measured window runs from the first
    measured request's start to the last one's end."""

    level: float  # concurrent streams, or requests/s
    closed_loop: bool  # concurrent streams (a request waits for the previous one), not a rate
    window_start_s: float
    window_end_s: float
    requests: list[RequestRecord]
    round: int = 0  # which pass through the sweep (load.repeats)
    # sent but missing from GuideLLM's report: 0.8.1 now and then ends a level with one request's
    # completion update lost (its scheduler still counts it as processing)
    unreported: int = 0


@dataclass(frozen=True, kw_only=True)
class LoadOutput:
    levels: list[LoadLevelRecords]
    generator: str  # the load generator and its version
    seconds: float


# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MaterializeRequest:
    """Write the source as an HF model directory: a GGUF file dequantized, or a hub model downloaded."""

    result: ClassVar[type] = MaterializedModel
    kind: str  # "gguf" (path) or "hf" (repo_id, revision)
    out: str
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    allow_pickle: bool = False  # a hub repo's pickle weights (*.bin); safetensors only by default


@dataclass(frozen=True, kw_only=True)
class TransformersLogprobsRequest:
    """Prompt logprobs of the first `tokens` tokens of a text under transformers (float32)."""

    result: ClassVar[type] = TokenLogprobs
    model_dir: str
    text_path: str
    tokens: int


@dataclass(frozen=True, kw_only=True)
class GGUFConvertRequest:
    result: ClassVar[type] = GGUFFile
    llama_cpp_src: str
    model_dir: str
    out: str
    outtype: str


@dataclass(frozen=True, kw_only=True)
class GGUFQuantizeRequest:
    result: ClassVar[type] = GGUFFile
    llama_quantize: str
    base: str
    out: str
    type: str
    threads: int
    imatrix: str | None = None  # an importance matrix file (llama-imatrix's) to weight the rounding by


@dataclass(frozen=True, kw_only=True)
class GGUFInspectRequest:
    result: ClassVar[type] = GGUFFile
    path: str


@dataclass(frozen=True, kw_only=True)
class CalibrationData:
    source: str  # builtin | file | hf
    samples: int
    max_seq_len: int
    text_field: str = "text"
    path: str | None = None
    dataset: str | None = None
    split: str = "train"


@dataclass(frozen=True, kw_only=True)
class ImatrixResult:
    seconds: float
    calibration_sha256: str  # of the texts read, as llm-compressor's oneshot reports it
    chunks: int  # of `max_seq_len` tokens, as llama-imatrix counted them
    peak_rss_mb: float | None = None


@dataclass(frozen=True, kw_only=True)
class GGUFImatrixRequest:
    """llama-imatrix over the recipe's calibration texts, in chunks of `calibration.max_seq_len` tokens."""

    result: ClassVar[type] = ImatrixResult
    llama_imatrix: str
    base: str  # the F16 GGUF the activations are collected on
    out: str
    calibration: CalibrationData
    threads: int


@dataclass(frozen=True, kw_only=True)
class Modifier:
    """One llm-compressor modifier, built in the worker as `module.name(**args)`."""

    module: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class OneshotRequest:
    result: ClassVar[type] = OneshotResult
    model_dir: str
    out: str
    modifiers: list[Modifier]
    calibration: CalibrationData | None  # None: the scheme reads no data


@dataclass(frozen=True, kw_only=True)
class ScorerLogprobsRequest:
    """Prompt logprobs of `token_ids` from an engine's in-process scorer."""

    result: ClassVar[type] = TokenLogprobs
    model_path: str
    token_ids: list[int]
    threads: int
    kv_cache: list[str] | None = None  # [K, V] cache types as the server has them; None: f16


@dataclass(frozen=True, kw_only=True)
class DivergenceRequest:
    """Exact divergence from full-vocabulary logits, both models in-process."""

    result: ClassVar[type] = DivergenceMetrics
    reference_path: str
    variant_path: str
    text_path: str
    windows: int
    window_tokens: int
    threads: int
    kv_cache: list[str] | None = None  # the variant's [K, V] cache types (the reference keeps f16)


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """lm-eval tasks on a served variant (loglikelihoods from the server or an in-process scorer,
    generation from the server)."""

    result: ClassVar[type] = EvalOutput
    model_path: str
    base_url: str
    api_key: str
    served_model: str
    out: str
    tasks: list[EvalTask]
    max_context: int  # tokens per scored sequence
    threads: int  # in-process scorer threads
    concurrency: int  # requests in flight against the server
    kv_cache: list[str] | None = None  # the in-process scorer's [K, V] cache types, as the server's


@dataclass(frozen=True, kw_only=True)
class TaskQuery:
    index: int
    task: str | None
    path: str | None


@dataclass(frozen=True, kw_only=True)
class TaskLookupRequest:
    """Find task references in lm-eval's index (the registry only when a name may be in it)."""

    result: ClassVar[type] = TaskLookup
    queries: list[TaskQuery]
    registry: bool


@dataclass(frozen=True, kw_only=True)
class TokenLengthSpec:
    mean: int
    stdev: int
    min: int | None
    max: int | None


@dataclass(frozen=True, kw_only=True)
class LoadRequest:
    """A load sweep against a served variant: one workload, sent at each level in turn."""

    result: ClassVar[type] = LoadOutput
    base_url: str
    api_key: str
    served_model: str
    tokenizer: str  # an HF tokenizer folder: prompts are built to exact token counts with it
    out: str
    api: str  # completions | chat
    prompt_tokens: TokenLengthSpec
    output_tokens: TokenLengthSpec
    prompts_file: str | None
    shared_prefix_tokens: int
    seed: int
    profile: str  # concurrency | rate
    levels: list[float]
    repeats: int  # passes through the levels, each level measured once per pass
    arrivals: str  # constant | poisson
    requests_per_level: int
    max_seconds_per_level: float
    warmup_requests: int
    request_timeout_s: float
