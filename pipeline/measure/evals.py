"""Task evals with lm-evaluation-harness on the served variant, per-item results kept for pairing.

Loglikelihoods come from the server where it scores prompts correctly (`served_prompt_logprobs`:
lm-eval's local-completions), else from the engine's in-process scorer on the same file and kernels,
which first passes an alignment probe against the server; a failed probe yields no score, only the
reason. Generation always goes to the server. Each task runs as `pipeline/measure/tasks.py`
resolved it; lm-eval's own results and samples files are kept beside ours.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.artifacts import RESULT_FILE, Store, content_key, write_json
from pipeline.engines import EngineContext
from pipeline.measure import NotMeasurable
from pipeline.measure.tasks import LOGLIKELIHOOD_TYPES, ResolvedTask
from pipeline.quantize import Artifact
from pipeline.measure.sequential import item_order, look_plan
from pipeline.recipe.schema import EvalsConfig, Gates, SequentialConfig
from pipeline.specs import Capabilities
from pipeline.workers.handoff import from_plain, to_plain
from pipeline.workers.messages import AlignmentSummary, EvalOutput, EvalRequest, StoppingRule, TaskScore

STAGE = "evals"
SCORER_VERSION = "4"  # bump when the way answers are scored changes: cached evals redo
SERVED_WORKER = "pipeline.workers.lmeval_api"  # runs in the engine's env, which has lm-eval's API client


class EvalFailed(Exception):
    """The evals ran but must not count (the scorer failed its alignment probe)."""


@dataclass(frozen=True)
class EvalResult:
    key: str
    folder: Path
    tasks: dict[str, TaskScore]  # gated label -> score
    alignment: AlignmentSummary
    seconds: float
    lm_eval_version: str | None = None
    lm_eval_output: str | None = None

    def items(self, label: str) -> list[dict[str, Any]]:
        """Per-item results in doc order: value (the metric), and for choice tasks gold and choice."""
        path = self.folder / self.tasks[label].samples_file
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def values(self, label: str) -> list[float]:
        return [float(item["value"]) for item in self.items(label)]


def key(tasks: list[ResolvedTask], config: EvalsConfig, artifact_key: str, engine: dict[str, Any],
        lm_eval_version: str | None, stopping: dict[str, Any] | None = None) -> str:
    """`stopping`: what sequential evaluation stops on (its settings and the reference's eval key), for a
    variant evaluated sequentially; its items depend on them."""
    runs = [{**asdict(t.eval_task(config.limit)), "files": t.fingerprint()} for t in tasks]
    extra = {"stopping": stopping} if stopping else {}
    return content_key(STAGE, artifact_key, engine, runs,
                       {"lm_eval": lm_eval_version, "scorer": SCORER_VERSION, **extra})


def tolerance(task: ResolvedTask, gates: Gates) -> float:
    """The drop the gate allows on this task: its own `tolerance`, else the gates'."""
    return task.ref.tolerance if task.ref.tolerance is not None else gates.tolerance(task.label)


def sequential_task(task: ResolvedTask) -> bool:
    """Whether a task can stop early: one lm-eval task, so that its doc ids name its items."""
    return len(task.info.subtasks) == 1


def stopping_rules(tasks: list[ResolvedTask], reference: EvalResult, sequential: SequentialConfig,
                   gates: Gates) -> dict[str, StoppingRule]:
    """Per task that can stop early, the looks and the reference's values to judge each against."""
    rules = {}
    for task in tasks:
        if not sequential_task(task) or task.label not in reference.tasks:
            continue
        values = {int(item["doc_id"]): float(item["value"]) for item in reference.items(task.label)}
        order = item_order(list(values), task.label)
        plan = look_plan(len(order), sequential.looks, gates.confidence, sequential.interim_share,
                         sequential.min_items_per_look, gates.bootstrap_iters)
        if len(plan.sizes) < 2:
            continue  # too few items to look more than once: every item, the fixed-sample gate
        rules[task.label] = StoppingRule(order=order, sizes=plan.sizes, alphas=plan.alphas, confidence=plan.confidence,
                                         iters=plan.iters, tolerance=tolerance(task, gates),
                                         reference_values=[values[doc] for doc in order])
    return rules


def worker(capabilities: Capabilities, tasks: list[ResolvedTask] | None = None) -> str:
    """The worker that runs these tasks on this engine: loglikelihoods need the server to score
    prompts or an in-process scorer; generation needs only the server."""
    if capabilities.served_prompt_logprobs:
        return SERVED_WORKER
    if capabilities.scorer is not None:
        return capabilities.scorer.worker
    if tasks is not None and all(t.output_type not in LOGLIKELIHOOD_TYPES for t in tasks):
        return SERVED_WORKER
    raise NotMeasurable("the engine neither scores prompts nor has an in-process scorer: no loglikelihood tasks")


def cached(store: Store, eval_key: str) -> EvalResult | None:
    return _result(store, eval_key, store.result(STAGE, eval_key)) if store.has(STAGE, eval_key) else None


def _result(store: Store, eval_key: str, data: dict[str, Any]) -> EvalResult:
    output = from_plain(data, EvalOutput)
    return EvalResult(eval_key, store.entry(STAGE, eval_key), output.tasks, output.alignment, output.seconds,
                      output.lm_eval_version, output.lm_eval_output)


def run(engine: EngineContext, artifact: Artifact, store: Store, tasks: list[ResolvedTask], config: EvalsConfig,
        eval_key: str, timeout_s: float, stopping: dict[str, StoppingRule] | None = None) -> EvalResult:
    """Score the tasks on the running server (and its scorer); stored under `eval_key`. A task with a
    stopping rule is scored look by look until its gate is settled."""
    with store.lock(STAGE, eval_key):  # another run measuring the same may have finished meanwhile
        if (found := cached(store, eval_key)) is not None:
            return found
        return _build(engine, artifact, store, tasks, config, eval_key, timeout_s, stopping or {})


def _build(engine: EngineContext, artifact: Artifact, store: Store, tasks: list[ResolvedTask], config: EvalsConfig,
           eval_key: str, timeout_s: float, stopping: dict[str, StoppingRule]) -> EvalResult:
    server = engine.running()
    capabilities = engine.capabilities
    runs = [replace(t.eval_task(config.limit), stopping=stopping.get(t.label)) for t in tasks]
    with store.building(STAGE, eval_key) as scratch:
        output: EvalOutput = engine.env.run_worker(worker(capabilities, tasks), EvalRequest(
            model_path=str(artifact.model_path), base_url=server.base_url, api_key=server.api_key,
            served_model=server.served_model, out=str(scratch), tasks=runs,
            max_context=capabilities.max_context, concurrency=capabilities.concurrency,
            threads=capabilities.scorer.threads if capabilities.scorer else 1,
            kv_cache=capabilities.scorer.cache_types() if capabilities.scorer else None,
        ), scratch, "lmeval.log", timeout_s=timeout_s)
        if not output.alignment.passed:
            raise EvalFailed(f"alignment probe failed, no score recorded: {output.alignment.reason}")
        data = to_plain(output)
        write_json(scratch / RESULT_FILE, data)
    return _result(store, eval_key, data)
