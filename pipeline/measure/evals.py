"""Task evals with lm-evaluation-harness on the served variant, per-sample results kept for pairing.

For llama.cpp the harness runs in the llama.cpp environment with an in-process scorer that first
passes an alignment probe against the server; a failed probe yields no score, only the reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.recipe import EVALSETS_DIR, EvalsConfig

STAGE = "evals"
SCORER_VERSION = "3"  # bump when the way loglikelihoods are scored changes: cached evals redo


@dataclass(frozen=True)
class TaskScore:
    acc: float
    n: int
    samples_file: str


@dataclass(frozen=True)
class EvalResult:
    key: str
    folder: Path
    tasks: dict[str, TaskScore]
    alignment: dict[str, Any]
    seconds: float
    cached: bool = False
    error: str | None = None

    @classmethod
    def from_json(cls, key: str, folder: Path, data: dict[str, Any], cached: bool) -> "EvalResult":
        tasks = {name: TaskScore(**score) for name, score in data.get("tasks", {}).items()}
        return cls(key, folder, tasks, data.get("alignment", {}), data.get("seconds", 0.0), cached, data.get("error"))

    def correct(self, task: str) -> list[int]:
        """Per-item 0/1 correctness in doc order (for paired comparisons)."""
        import json

        path = self.folder / self.tasks[task].samples_file
        return [json.loads(line)["correct"] for line in path.read_text().splitlines() if line]


def evalset_fingerprint(tasks: list[str]) -> str:
    """Hash of every file in the named task sets: editing an item re-runs the evals."""
    digest = hashlib.sha256()
    for task in tasks:
        for path in sorted((EVALSETS_DIR / task).rglob("*")):
            if path.is_file() and path.suffix in (".yaml", ".jsonl", ".json"):
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def stage_task_configs(tasks: list[str], into: Path) -> Path:
    """Copy the task YAMLs with absolute data paths: lm-eval resolves `data_files` against the cwd."""
    include = into / "tasks"
    include.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        config = yaml.safe_load((EVALSETS_DIR / task / f"{task}.yaml").read_text())
        files = config.get("dataset_kwargs", {}).get("data_files", {})
        for split, rel in list(files.items()):
            name = Path(rel).name
            files[split] = str((EVALSETS_DIR / task / name).resolve())
        (include / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return include


def task_names(tasks: list[str]) -> dict[str, str]:
    """Evalset folder name -> the lm-eval task name its YAML declares."""
    return {t: yaml.safe_load((EVALSETS_DIR / t / f"{t}.yaml").read_text())["task"] for t in tasks}


def request_for(config: EvalsConfig, model_path: Path, engine: Any, out: Path) -> dict[str, Any]:
    names = task_names(config.tasks)
    return {
        "model_path": str(model_path),
        "base_url": engine.base_url,
        "api_key": engine.api_key,
        "served_model": engine.served_model,
        "out": str(out),
        "tasks": list(names.values()),
        "include_path": str(stage_task_configs(config.tasks, out)),
        "limit": config.limit,
        "n_ctx": 1024,
        "threads": engine.scorer_threads,
    }
