"""Faults injected into real runs (tiny model, real llama-server, real lm-eval and GuideLLM): the
engine is SIGKILLed in the middle of a measurement. Nothing measured against the dead server counts,
nothing half-made is cached, nothing is left running, and running the same command again finishes
the job.

One recipe and one artifacts folder, three runs in a row:
1. the reference's server is killed during its evals -> the run is broken (exit 3), the reference's
   evals are not cached (q8_0, on its own server, is measured and cached);
2. the reference's server is killed during its load sweep -> broken again; its evals (measured this
   time, on a live server) are cached, its sweep is not;
3. no fault -> the run completes from what is cached (exit 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipeline.settings import REPO_ROOT
from tests.integration.conftest import user_task_refs

pytestmark = pytest.mark.integration

EXIT_BROKEN = 3


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_model, user_tasks) -> Path:
    data = {
        "name": "faults",
        "model": {"kind": "local", "path": str(tiny_model)},
        "variants": [{"name": "f16", "kind": "gguf", "type": "F16", "reference": True},
                     {"name": "q8_0", "kind": "gguf", "type": "Q8_0"}],
        "engines": {"llamacpp": {"threads": 1, "parallel": 2, "ctx_per_slot": 256}},
        # qg_echo generates through the server, so killing it mid-evals fails the evals themselves
        "evals": {"tasks": user_task_refs(user_tasks)[:2], "limit": 24},  # qg_length tells variants apart
        "load": {"levels": [1], "repeats": 2, "requests_per_level": 6, "prompt_tokens": 32, "output_tokens": 24,
                 "warmup_requests": 1},
        "divergence": {"text": "stdlib:difflib", "windows": 1, "window_tokens": 128},
        "slo": {"ttft_ms": 20000},
        "gates": {"max_accuracy_drop": 0.2, "bootstrap_iters": 1000},
        "hardware": {"name": "ci", "usd_per_hour": 0.1},
        "tracking": {"experiment": "quantgate-faults", "registered_model": "faults"},
    }
    path = tmp_path_factory.mktemp("faults") / "faults.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault-artifacts")


def servers(artifacts: Path) -> list[int]:
    """llama-server processes serving something under `artifacts`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"llama-server") and any(str(artifacts).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def kill_server_when(artifacts: Path, stage: str, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the running server as soon as a `stage` entry starts being built (its scratch folder)."""
    while not stop.is_set():
        building = list((artifacts / stage).glob(".*.tmp-*")) if (artifacts / stage).is_dir() else []
        if building and (pids := servers(artifacts)):
            time.sleep(1.0)  # let the measurement get going
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)
            return
        time.sleep(0.05)


def run(recipe: Path, artifacts: Path, kill_during: str | None = None) -> tuple[subprocess.CompletedProcess, list[int]]:
    env = dict(os.environ, QUANTGATE_ARTIFACTS=str(artifacts), HF_HUB_OFFLINE="1", COLUMNS="200")
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=kill_server_when, args=(artifacts, kill_during, stop, killed), daemon=True)
    if kill_during:
        watcher.start()
    try:
        proc = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "quantgate"), "run", str(recipe)], env=env,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    finally:
        stop.set()
    return proc, killed


def finished(artifacts: Path, stage: str) -> list[Path]:
    return [p for p in (artifacts / stage).iterdir() if (p / "result.json").is_file()] \
        if (artifacts / stage).is_dir() else []


@pytest.fixture(scope="module")
def killed_in_evals(recipe, artifacts):
    return run(recipe, artifacts, kill_during="evals")


def test_a_server_killed_during_evals_voids_them_and_breaks_the_run(killed_in_evals, artifacts):
    proc, killed = killed_in_evals
    assert killed, "the fault was never injected"
    assert proc.returncode == EXIT_BROKEN, proc.stdout + proc.stderr
    out = proc.stdout
    assert "[f16] server died during the evals: its results are discarded" in out
    assert "[f16] evals, load FAILED: server failed during the evals: server exited with signal SIGKILL; log " in out
    assert "Traceback" not in out + proc.stderr and "run broken: reference f16" in proc.stderr
    log = out.split("server exited with signal SIGKILL; log ", 1)[1].split()[0]
    assert Path(log).is_file() and Path(log).parent == artifacts / "failed"  # where the log is now
    report = json.loads(max((artifacts / "reports").glob("*.json")).read_text())
    f16 = next(r for r in report["rows"] if r["variant"] == "f16")
    assert not any(f16["score"].values()) and f16["load"] == []  # no scores, no load levels
    assert len(finished(artifacts, "evals")) == 1  # q8_0's; nothing measured against the dead server
    assert any(p.name.startswith("evals-") for p in (artifacts / "failed").iterdir())  # its logs are kept
    assert servers(artifacts) == []  # nothing left running


def test_a_server_killed_during_the_load_sweep_is_no_measurement(killed_in_evals, recipe, artifacts):
    proc, killed = run(recipe, artifacts, kill_during="load")
    assert killed, "the fault was never injected"
    assert proc.returncode == EXIT_BROKEN, proc.stdout + proc.stderr
    assert "[f16] server died during the load sweep: its results are discarded" in proc.stdout
    assert "[f16] load FAILED: server failed during the load sweep: server exited with signal SIGKILL; log " in proc.stdout
    assert len(finished(artifacts, "evals")) == 2 and len(finished(artifacts, "load")) == 1  # q8_0's, from run 1
    report = json.loads(max((artifacts / "reports").glob("*.json")).read_text())
    f16 = next(r for r in report["rows"] if r["variant"] == "f16")
    assert f16["score"] and f16["load"] == [] and f16["capacity"] is None  # no tokens/s of 0.0 from a dead server
    assert servers(artifacts) == []


def test_running_again_finishes_the_job(killed_in_evals, recipe, artifacts):
    before = {p.name for p in finished(artifacts, "evals")}
    proc, _ = run(recipe, artifacts)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[f16] quantize cached" in proc.stdout and "[q8_0] quantize cached" in proc.stdout
    assert "running task evals" not in proc.stdout  # both variants' evals were reused
    assert {p.name for p in finished(artifacts, "evals")} == before
    assert len(finished(artifacts, "load")) == 2  # exit 0: measured, and a variant was promoted
    assert servers(artifacts) == []
