"""Running resolved tasks with lm-eval and keeping their per-item results, shared by the eval workers
so every engine stores its items the same way for paired comparisons (lm-eval imported lazily).

Each task runs in its own `simple_evaluate` (its options are its own), from its folder (relative
data files resolve there, as when lm-eval is run by hand from it). lm-eval's own results and
samples files are written under `lm-eval/` beside ours, so a reviewer can read them with lm-eval.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path
from typing import Any, Callable

from pipeline.workers.messages import AlignmentSummary, EvalTask, StoppingRule, TaskScore


def alignment_summary(probe: dict[str, Any]) -> AlignmentSummary:
    """The probe's verdict without its per-token rows (those stay in alignment_probe.json)."""
    return AlignmentSummary(**{k: v for k, v in probe.items() if k not in ("server_tokens", "scorer_rows")})


@contextlib.contextmanager
def _cwd(folder: str):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def run_tasks(lm: Any, tasks: list[EvalTask], out: Path, model_name: str) -> tuple[dict[str, TaskScore], str | None]:
    """Every task on `lm`: (gated label -> score, lm-eval's version)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    managers: dict[tuple[str | None, bool], Any] = {}
    scores: dict[str, TaskScore] = {}
    version = None
    for task in tasks:
        registry = task.include_path is None
        manager = managers.get((task.include_path, registry))
        if manager is None:  # the registry's index takes ~20 s to build: once per worker
            manager = managers[(task.include_path, registry)] = TaskManager(
                include_path=task.include_path, include_defaults=registry)

        def evaluate(folder: Path, chunk: list[int] | None) -> dict[str, list[dict[str, Any]]]:
            """One simple_evaluate of this task (of the doc ids in `chunk` only, if given): its samples."""
            nonlocal version
            tracker = EvaluationTracker(output_path=str(folder))
            with _cwd(task.cwd):
                results = simple_evaluate(
                    model=lm, model_args={"model": model_name}, tasks=[task.spec], task_manager=manager,
                    num_fewshot=task.num_fewshot, limit=None if chunk is not None else task.limit,
                    samples={task.subtasks[0]: chunk} if chunk is not None else None, gen_kwargs=task.gen_kwargs,
                    apply_chat_template=task.apply_chat_template, fewshot_as_multiturn=task.apply_chat_template,
                    log_samples=True, bootstrap_iters=0, evaluation_tracker=tracker,
                )
            version = results.get("lm_eval_version")
            samples = results.pop("samples")
            kept = copy.deepcopy(samples)  # lm-eval's writer rewrites them
            tracker.save_results_aggregated(results=results, samples=samples)
            for name in results["configs"]:
                tracker.save_results_samples(task_name=name, samples=samples[name])
            return kept

        if task.stopping is None:
            samples, stopped = evaluate(out / "lm-eval" / task.label, None), None
        else:
            samples, stopped = _sequential(task, task.stopping, out / "lm-eval" / task.label, evaluate)
        scores.update(task_scores(samples, task, out, stopped))
    return scores, version


def _sequential(task: EvalTask, rule: StoppingRule, folder: Path,
                evaluate: Callable[[Path, list[int] | None], dict[str, list[dict[str, Any]]]]
                ) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """The task's items look by look, until the gate against the reference is settled."""
    from pipeline.measure.sequential import CONTINUE, LookPlan, settle

    name = task.subtasks[0]
    plan = LookPlan(sizes=rule.sizes, alphas=rule.alphas, confidence=rule.confidence, iters=rule.iters)
    collected: list[dict[str, Any]] = []
    start = 0
    for look, size in enumerate(rule.sizes, 1):
        # sorted: lm-eval takes a `samples` list's docs in dataset order but labels the k-th with its k-th id
        chunk = sorted(rule.order[start:size])
        collected += [s for s in evaluate(folder / f"look-{look}", chunk).get(name, [])
                      if s.get("filter", "none") == task.filter]
        start = size
        by_doc = {s["doc_id"]: float(s[task.metric]) for s in collected}
        missing = [doc for doc in rule.order[:size] if doc not in by_doc]
        if missing:
            raise RuntimeError(f"{task.label}: lm-eval returned no result for doc ids {missing[:5]} of look {look}")
        settled = settle(rule.reference_values, [by_doc[doc] for doc in rule.order[:size]], rule.tolerance, plan)
        if settled.outcome != CONTINUE:
            return {name: collected}, f"{settled.outcome} at {settled.reason}"
    raise AssertionError("the last look always settles")


def item(sample: dict[str, Any], metric: str) -> dict[str, Any]:
    """One sample as the gate reads it: the metric's value, and for choice tasks the options."""
    row: dict[str, Any] = {"doc_id": sample["doc_id"], "value": float(sample[metric])}
    responses = sample.get("filtered_resps") or []
    if responses and all(isinstance(r, (list, tuple)) and len(r) == 2 and isinstance(r[0], (int, float))
                         for r in responses):  # loglikelihoods of each choice
        lls = [float(r[0]) for r in responses]
        row.update(choice=max(range(len(lls)), key=lls.__getitem__), n_choices=len(lls), loglikelihoods=lls)
        if isinstance(sample.get("target"), int):
            row["gold"] = sample["target"]
    else:
        row.update(target=str(sample.get("target")), response=str(responses[0]) if responses else "")
    return row


def task_scores(samples: dict[str, list[dict[str, Any]]], task: EvalTask, out: Path,
                stopped: str | None = None) -> dict[str, TaskScore]:
    """Per-item files and scores of one task: one for the task (or a group pooled), else one per member."""
    per_subtask = {}
    for name in task.subtasks:
        chosen = [s for s in samples.get(name, []) if s.get("filter", "none") == task.filter]
        per_subtask[name] = [item(s, task.metric) for s in sorted(chosen, key=lambda s: s["doc_id"])]
    groups = ({task.label: [dict(row, subtask=name) for name in task.subtasks for row in per_subtask[name]]}
              if task.pooled else {f"{task.label}/{name}": rows for name, rows in per_subtask.items()})
    scores = {}
    for label, rows in groups.items():
        file = f"samples_{label.replace('/', '__')}.jsonl"
        with open(out / file, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        scores[label] = TaskScore(value=sum(r["value"] for r in rows) / len(rows) if rows else float("nan"),
                                  metric=task.metric, n=len(rows), samples_file=file, stopped=stopped)
    return scores
