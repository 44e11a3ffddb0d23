"""Task evals with lm-evaluation-harness on the served variant, per-sample results kept for pairing.

Loglikelihoods come from the server where it scores prompts correctly (`served_prompt_logprobs`:
lm-eval's local-completions), else from the engine's in-process scorer on the same file and kernels,
which first passes an alignment probe against the server; a failed probe yields no score, only the
reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.artifacts import RESULT_FILE, Store, content_key, write_json
from pipeline.engines import EngineContext
from pipeline.measure import NotMeasurable
from pipeline.quantize import Artifact
from pipeline.recipe.schema import EvalsConfig
from pipeline.specs import Capabilities
from pipeline.workers.handoff import from_plain, to_plain
from pipeline.workers.messages import AlignmentSummary, EvalOutput, EvalRequest, TaskScore

STAGE = "evals"
SCORER_VERSION = "3"  # bump when the way loglikelihoods are scored changes: cached evals redo
EVALSETS_DIR = Path(__file__).resolve().parents[2] / "evalsets"
SERVED_WORKER = "pipeline.workers.lmeval_api"  # runs in the engine's env, which has lm-eval's API client


class EvalFailed(Exception):
    """The evals ran but must not count (the scorer failed its alignment probe)."""


@dataclass(frozen=True)
class EvalResult:
    key: str
    folder: Path
    tasks: dict[str, TaskScore]  # evalset name -> score
    alignment: AlignmentSummary
    seconds: float
    lm_eval_version: str | None = None

    def correct(self, task: str) -> list[int]:
        """Per-item 0/1 correctness in doc order (for paired comparisons)."""
        path = self.folder / self.tasks[task].samples_file
        return [json.loads(line)["correct"] for line in path.read_text().splitlines() if line]


def available_evalsets() -> list[str]:
    if not EVALSETS_DIR.is_dir():
        return []
    return sorted(p.name for p in EVALSETS_DIR.iterdir() if (p / f"{p.name}.yaml").is_file())


def evalset_fingerprint(tasks: list[str]) -> str:
    """Hash of every file in the named task sets: editing an item re-runs the evals."""
    digest = hashlib.sha256()
    for task in tasks:
        for path in sorted((EVALSETS_DIR / task).rglob("*")):
            if path.is_file() and path.suffix in (".yaml", ".jsonl", ".json"):
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def key(config: EvalsConfig, artifact_key: str, engine: dict[str, Any], lm_eval_version: str | None) -> str:
    return content_key(STAGE, artifact_key, engine, config.model_dump(), evalset_fingerprint(config.tasks),
                       {"lm_eval": lm_eval_version, "scorer": SCORER_VERSION})


def worker(capabilities: Capabilities) -> str:
    """The worker that scores loglikelihood tasks on this engine."""
    if capabilities.served_prompt_logprobs:
        return SERVED_WORKER
    if capabilities.scorer is not None:
        return capabilities.scorer.worker
    raise NotMeasurable("the engine neither scores prompts nor has an in-process scorer: no loglikelihood tasks")


def cached(store: Store, eval_key: str) -> EvalResult | None:
    return _result(store, eval_key, store.result(STAGE, eval_key)) if store.has(STAGE, eval_key) else None


def _result(store: Store, eval_key: str, data: dict[str, Any]) -> EvalResult:
    output = from_plain(data, EvalOutput)
    return EvalResult(eval_key, store.entry(STAGE, eval_key), output.tasks, output.alignment, output.seconds,
                      output.lm_eval_version)


def stage_task_configs(tasks: list[str], into: Path) -> Path:
    """Copy the task YAMLs with absolute data paths: lm-eval resolves `data_files` against the cwd."""
    include = into / "tasks"
    include.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        config = yaml.safe_load((EVALSETS_DIR / task / f"{task}.yaml").read_text())
        files = config.get("dataset_kwargs", {}).get("data_files", {})
        for split, rel in list(files.items()):
            files[split] = str((EVALSETS_DIR / task / Path(rel).name).resolve())
        (include / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return include


def task_names(tasks: list[str]) -> dict[str, str]:
    """Evalset folder name -> the lm-eval task name its YAML declares."""
    return {t: yaml.safe_load((EVALSETS_DIR / t / f"{t}.yaml").read_text())["task"] for t in tasks}


def run(engine: EngineContext, artifact: Artifact, store: Store, config: EvalsConfig, eval_key: str) -> EvalResult:
    """Score the tasks on the running server (and its scorer); stored under `eval_key`."""
    server = engine.running()
    capabilities = engine.capabilities
    with store.building(STAGE, eval_key) as scratch:
        names = task_names(config.tasks)
        output: EvalOutput = engine.env.run_worker(worker(capabilities), EvalRequest(
            model_path=str(artifact.model_path), base_url=server.base_url, api_key=server.api_key,
            served_model=server.served_model, out=str(scratch), tasks=list(names.values()),
            include_path=str(stage_task_configs(config.tasks, scratch)), limit=config.limit,
            max_context=capabilities.max_context, concurrency=capabilities.concurrency,
            threads=capabilities.scorer.threads if capabilities.scorer else 1,
        ), scratch, "lmeval.log")
        if not output.alignment.passed:
            raise EvalFailed(f"alignment probe failed, no score recorded: {output.alignment.reason}")
        data = to_plain(output)
        data["tasks"] = {evalset: data["tasks"][lm_name] for evalset, lm_name in names.items()}
        write_json(scratch / RESULT_FILE, data)
    return _result(store, eval_key, data)
