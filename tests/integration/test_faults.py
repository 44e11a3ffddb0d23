"""Faults injected into real runs (tiny model, real llama-server, lm-eval, GuideLLM, MLflow), one
artifacts folder, one case after another; each case ends with nothing half-made kept, nothing left
running, and the next run finishing the job:

the reference's server SIGKILLed during its evals, then during its load sweep (the measurement void,
not cached, the run broken); SIGINT mid-run, then a resume (same parent run) with its first port
taken; cache entries tampered with; the quantizer killed midway; a hung worker past its time limit; a
server that never gets ready; the tracking store down; the divergence worker killed; three runs of
one recipe at once; --force; the disk full. A planted HF_TOKEN is found nowhere in the artifacts or
the MLflow store, and neither is any API key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

from pipeline.engines.server import free_port
from pipeline.plan import make_plan
from pipeline.recipe.load import load_recipe
from pipeline.settings import REPO_ROOT, Settings
from tests.integration.conftest import user_task_refs

pytestmark = pytest.mark.integration

EXIT_OK, EXIT_BROKEN, EXIT_INTERRUPTED = 0, 3, 130
PLANTED = "hf_plantedTOKENfaults0123456789"
API_KEY = re.compile(rb"qg-[0-9a-f]{32}")


@pytest.fixture(scope="module")
def recipe_data(tiny_model, user_tasks) -> dict:
    return {
        "name": "faults",
        "model": {"kind": "local", "path": str(tiny_model)},
        "variants": [{"name": "f16", "kind": "gguf", "type": "F16", "reference": True},
                     {"name": "q8_0", "kind": "gguf", "type": "Q8_0"}],
        "engines": {"llamacpp": {"threads": 1, "parallel": 2, "ctx_per_slot": 256}},
        "evals": {"tasks": user_task_refs(user_tasks)[:2], "limit": 16},
        "load": {"levels": [1], "repeats": 1, "requests_per_level": 4, "prompt_tokens": 32, "output_tokens": 16,
                 "warmup_requests": 1},
        "divergence": {"text": "stdlib:difflib", "windows": 1, "window_tokens": 128},
        "slo": {"ttft_ms": 20000},
        "gates": {"max_accuracy_drop": 0.2, "bootstrap_iters": 1000, "max_kld": 1.0},
        "hardware": {"name": "ci", "usd_per_hour": 0.1},
        "tracking": {"experiment": "quantgate-faults", "registered_model": "faults"},
    }


@pytest.fixture(scope="module")
def recipe(recipe_data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "faults.yaml"
    path.write_text(yaml.safe_dump(recipe_data))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault-artifacts")


# --- processes, entries, runs ---------------------------------------------------------------------


def processes(match: Callable[[list[bytes]], bool]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0] and match(argv):
                found.append(int(entry.name))
    return found


def servers(artifacts: Path) -> list[int]:
    return processes(lambda argv: argv[0].endswith(b"llama-server") and any(str(artifacts).encode() in a for a in argv))


def workers(artifacts: Path, module: str) -> list[int]:
    """Worker processes of `module` whose request lies under `artifacts`."""
    return processes(lambda argv: module.encode() in argv and any(str(artifacts).encode() in a for a in argv))


def building(artifacts: Path, stage: str) -> bool:
    return (artifacts / stage).is_dir() and any((artifacts / stage).glob(".*.tmp-*"))


def finished(artifacts: Path, stage: str) -> dict[str, dict]:
    """key -> result of every finished entry of `stage`."""
    folder = artifacts / stage
    return {p.name: json.loads((p / "result.json").read_text()) for p in folder.iterdir()
            if (p / "result.json").is_file()} if folder.is_dir() else {}


def entry_of(artifacts: Path, stage: str, variant: str) -> Path:
    """The entry of `stage` that belongs to `variant`, by the keys the plan computes."""
    planned = next(v for v in make_plan(load_recipe(state["recipe"]), Settings(artifacts=artifacts)).variants
                   if v.name == variant)
    return artifacts / stage / {"variants": planned.artifact_key, "evals": planned.eval_key,
                                "load": planned.load_key}[stage]


def latest_report(artifacts: Path) -> dict:
    return json.loads(max((artifacts / "reports").glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())


def env_for(artifacts: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, QUANTGATE_ARTIFACTS=str(artifacts), HF_HUB_OFFLINE="1", COLUMNS="200", HF_TOKEN=PLANTED,
                **extra)


def start(recipe: Path, artifacts: Path, *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([str(REPO_ROOT / ".venv" / "bin" / "quantgate"), "run", str(recipe), *args],
                            env=env_for(artifacts, **extra_env), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(recipe: Path, artifacts: Path, *args: str, fault: Callable[[subprocess.Popen], bool] | None = None,
        **extra_env: str) -> tuple[subprocess.CompletedProcess, bool]:
    """Run quantgate; `fault(proc)` is polled meanwhile until it returns True (it injected its fault).
    Returns (the finished process, whether the fault was injected)."""
    proc = start(recipe, artifacts, *args, **extra_env)
    injected = threading.Event()

    def watch() -> None:
        while proc.poll() is None:
            if fault(proc):
                injected.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    if fault:
        watcher.start()
    out, err = proc.communicate(timeout=1800)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), injected.is_set()


def said(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def no_traceback_and_nothing_running(proc: subprocess.CompletedProcess, artifacts: Path) -> None:
    assert "Traceback" not in said(proc), said(proc)
    assert servers(artifacts) == [] and workers(artifacts, "pipeline.workers") == []
    leftovers = [p for stage in artifacts.iterdir() if stage.is_dir() for p in stage.glob(".*.tmp-*")]
    assert leftovers == []  # nothing half-made outside failed/


def parent_run(proc: subprocess.CompletedProcess) -> str:
    found = re.search(r"MLflow parent run ([0-9a-f]{32})", proc.stdout)
    assert found, proc.stdout
    return found.group(1)


# --- the cases, in order ------------------------------------------------------------------------------

state: dict = {}


def signal_when(artifacts: Path, stage: str, targets: Callable[[], list[int]], sig: int,
                when: Callable[[], bool] = lambda: True, delay_s: float = 0.0) -> Callable[[subprocess.Popen], bool]:
    """A fault: `sig` to the processes `targets()` finds, once a `stage` entry is being made (and
    `when()` holds), after `delay_s` for the measurement to get going."""
    def fault(proc: subprocess.Popen) -> bool:
        if building(artifacts, stage) and when() and (pids := targets()):
            time.sleep(delay_s)
            for pid in pids:
                os.kill(pid, sig)
            return True
        return False
    return fault


def kill_server_during(artifacts: Path, stage: str) -> Callable[[subprocess.Popen], bool]:
    return signal_when(artifacts, stage, lambda: servers(artifacts), signal.SIGKILL, delay_s=1.0)


def signal_workers(artifacts: Path, stage: str, module: str, sig: int, when: Callable[[], bool] = lambda: True,
                   delay_s: float = 0.0) -> Callable[[subprocess.Popen], bool]:
    return signal_when(artifacts, stage, lambda: workers(artifacts, module), sig, when, delay_s)


def test_a_server_killed_during_evals_voids_them_and_breaks_the_run(recipe, artifacts):
    state["recipe"] = recipe
    proc, injected = run(recipe, artifacts, fault=kill_server_during(artifacts, "evals"))
    assert injected, said(proc)
    assert proc.returncode == EXIT_BROKEN, said(proc)
    no_traceback_and_nothing_running(proc, artifacts)
    assert "[f16] server died during the evals: its results are discarded" in proc.stdout
    assert "[f16] evals, load FAILED: server failed during the evals: server exited with signal SIGKILL; log " in proc.stdout
    assert "run broken: reference f16" in proc.stderr
    log = proc.stdout.split("server exited with signal SIGKILL; log ", 1)[1].split()[0]
    assert Path(log).is_file() and Path(log).parent == artifacts / "failed"  # where the log is now
    f16 = next(r for r in latest_report(artifacts)["rows"] if r["variant"] == "f16")
    assert not any(f16["score"].values()) and f16["load"] == []  # no scores, no load levels
    assert len(finished(artifacts, "evals")) == 1  # q8_0's; nothing measured against the dead server
    assert any(p.name.startswith("evals-") for p in (artifacts / "failed").iterdir())  # its logs are kept


def test_a_server_killed_during_the_load_sweep_is_no_measurement(recipe, artifacts):
    proc, injected = run(recipe, artifacts, fault=kill_server_during(artifacts, "load"))
    assert injected, said(proc)
    assert proc.returncode == EXIT_BROKEN, said(proc)
    no_traceback_and_nothing_running(proc, artifacts)
    assert "[f16] server died during the load sweep: its results are discarded" in proc.stdout
    assert "[f16] load FAILED: server failed during the load sweep: server exited with signal SIGKILL; log " in proc.stdout
    assert len(finished(artifacts, "evals")) == 2 and len(finished(artifacts, "load")) == 1  # q8_0's, from run 1
    f16 = next(r for r in latest_report(artifacts)["rows"] if r["variant"] == "f16")
    assert f16["score"] and f16["load"] == [] and f16["capacity"] is None  # no tokens/s of 0.0 from a dead server


def test_sigint_mid_run_stops_everything_and_leaves_the_parent_run_open(recipe, artifacts):
    def interrupt_during_load(proc: subprocess.Popen) -> bool:
        if building(artifacts, "load") and servers(artifacts):
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            return True
        return False

    proc, injected = run(recipe, artifacts, fault=interrupt_during_load)
    assert injected, said(proc)
    assert proc.returncode == EXIT_INTERRUPTED, said(proc)
    assert "interrupted: run the same command again to finish" in proc.stderr
    no_traceback_and_nothing_running(proc, artifacts)
    assert len(finished(artifacts, "evals")) == 2 and len(finished(artifacts, "load")) == 1  # q8_0's sweep only
    state["parent"] = parent_run(proc)


def test_running_again_resumes_into_the_same_parent_run_with_its_first_port_taken(recipe, artifacts):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        taken = holder.getsockname()[1]
        proc, _ = run(recipe, artifacts, QUANTGATE_PORTS=f"{taken}-{taken + 4}")
    assert proc.returncode == EXIT_OK, said(proc)
    no_traceback_and_nothing_running(proc, artifacts)
    assert f"MLflow parent run {state['parent']} (resumed" in proc.stdout
    assert "[f16] quantize cached" in proc.stdout and "[q8_0] quantize cached" in proc.stdout
    assert "running task evals" not in proc.stdout  # both variants' evals were reused
    assert len(finished(artifacts, "load")) == 2
    log = (entry_of(artifacts, "load", "f16") / "server.log").read_text()
    assert f"port {taken} was taken when the server bound it" in log
    report = latest_report(artifacts)
    assert report["mlflow_parent_run"] == state["parent"] and report["decision"]
    state["f16_scores"] = next(r for r in report["rows"] if r["variant"] == "f16")["score"]


def test_tampered_cache_entries_are_never_used_and_are_made_again(recipe, artifacts):
    model = entry_of(artifacts, "variants", "q8_0") / "model.gguf"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    evals = entry_of(artifacts, "evals", "f16") / "result.json"
    evals.write_text(evals.read_text().replace('"passed": true', '"passed": true ', 1))  # any change counts
    proc, _ = run(recipe, artifacts)
    assert proc.returncode == EXIT_OK, said(proc)
    no_traceback_and_nothing_running(proc, artifacts)
    assert re.search(r"variants/\w+: model\.gguf does not match its sha256 \(changed since it was made\); not used,"
                     r" moved to \S+; made again", proc.stdout), proc.stdout
    assert re.search(r"evals/\w+: result\.json has \d+ bytes, \d+ when made \(truncated or changed\)", proc.stdout)
    assert "[q8_0] quantize done" in proc.stdout and "[f16] running task evals" in proc.stdout
    damaged = [p.name for p in (artifacts / "failed").iterdir() if "-damaged-" in p.name]
    assert sorted(name.split("-")[0] for name in damaged) == ["evals", "variants"]
    f16 = next(r for r in latest_report(artifacts)["rows"] if r["variant"] == "f16")
    assert f16["score"] == state["f16_scores"]  # measured again, the same: deterministic scoring


def test_a_quantizer_killed_midway_fails_its_variant_only(recipe, artifacts):
    shutil.rmtree(entry_of(artifacts, "variants", "q8_0"))

    proc, injected = run(recipe, artifacts,
                         fault=signal_workers(artifacts, "variants", "pipeline.workers.gguf", signal.SIGKILL))
    assert injected, said(proc)
    assert proc.returncode == EXIT_BROKEN, said(proc)  # the only variant besides the reference failed
    no_traceback_and_nothing_running(proc, artifacts)
    assert re.search(r"\[q8_0\] quantize FAILED: pipeline\.workers\.gguf failed \(exit -9\).*; log \S+/failed/", proc.stdout)
    assert "run broken: every variant failed (q8_0)" in proc.stderr
    assert len(finished(artifacts, "variants")) == 1  # f16's; nothing half-made under variants/


def recipe_with(recipe_data: dict, folder: Path, change: Callable[[dict], None]) -> Path:
    """A copy of the recipe with `change` made: keys stay the same when what changes is no key's part."""
    data = json.loads(json.dumps(recipe_data))
    change(data)
    path = folder / "changed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_hung_worker_is_stopped_at_its_time_limit(recipe_data, artifacts, tmp_path):
    shutil.rmtree(entry_of(artifacts, "evals", "q8_0"))
    impatient = recipe_with(recipe_data, tmp_path, lambda d: d.update(timeouts={"evals": 12}))
    # SIGSTOP: alive and silent, a hung tool
    hang = signal_workers(artifacts, "evals", "pipeline.workers.llamacpp_scorer", signal.SIGSTOP)
    proc, injected = run(impatient, artifacts, fault=hang)
    assert injected, said(proc)
    assert proc.returncode == EXIT_BROKEN, said(proc)
    no_traceback_and_nothing_running(proc, artifacts)
    assert re.search(r"\[q8_0\] evals FAILED: pipeline\.workers\.llamacpp_scorer ran past its 12 s limit and was"
                     r" stopped with its children; log \S+/failed/", proc.stdout), proc.stdout
    assert "[q8_0] quantize done" in proc.stdout  # the crashed quantize of the case before is made now


def test_a_server_that_never_gets_ready_fails_its_measurements(recipe_data, artifacts, tmp_path):
    path = recipe_with(recipe_data, tmp_path, lambda d: d["engines"]["llamacpp"].update(ready_timeout_s=0.2))
    proc, _ = run(path, artifacts)
    assert proc.returncode == EXIT_BROKEN, said(proc)
    assert "run broken: every variant failed (q8_0)" in proc.stderr
    no_traceback_and_nothing_running(proc, artifacts)
    assert re.search(r"\[q8_0\] evals FAILED: server failed: server not ready after 0\.2 s; log \S+/failed/serve-q8_0-\w+\.log",
                     proc.stdout), proc.stdout


def test_a_tracking_store_that_is_down_loses_no_measurement(recipe, artifacts):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    proc, _ = run(recipe, artifacts, QUANTGATE_TRACKING_URI=dead, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                  MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    assert proc.returncode == EXIT_BROKEN, said(proc)
    no_traceback_and_nothing_running(proc, artifacts)
    assert f"warning: tracking store {dead} unavailable" in proc.stdout
    assert f"not recorded: tracking store {dead} did not take the record" in proc.stderr
    assert "[q8_0] running task evals" in proc.stdout  # measured anyway, and cached
    assert entry_of(artifacts, "evals", "q8_0").is_dir()


def test_the_divergence_worker_killed_midway_blocks_promotion_of_that_variant(recipe, artifacts):
    for key in finished(artifacts, "divergence"):
        shutil.rmtree(artifacts / "divergence" / key)

    # q8_0's divergence worker: the reference's own divergence comes first
    kill = signal_workers(artifacts, "divergence", "pipeline.workers.llamacpp_scorer", signal.SIGKILL,
                          when=lambda: bool(finished(artifacts, "divergence")), delay_s=0.3)
    proc, injected = run(recipe, artifacts, fault=kill)
    assert injected, said(proc)
    assert proc.returncode == EXIT_OK, said(proc)  # the reference is promoted; q8_0 has no divergence to pass on
    no_traceback_and_nothing_running(proc, artifacts)
    assert "[q8_0] divergence FAILED: pipeline.workers.llamacpp_scorer failed (exit -9)" in proc.stdout
    q8 = next(r for r in latest_report(artifacts)["rows"] if r["variant"] == "q8_0")
    assert not q8["passed"] and any("divergence missing" in reason for reason in q8["reasons"]), q8["reasons"]
    assert len(finished(artifacts, "divergence")) == 1  # nothing from the killed worker
    assert f"MLflow parent run {state['parent']}" not in proc.stdout  # the earlier parent is complete


def test_two_runs_of_one_recipe_at_once_measure_once(recipe, artifacts):
    shutil.rmtree(entry_of(artifacts, "load", "q8_0"))
    first = start(recipe, artifacts)
    time.sleep(2.0)
    second = start(recipe, artifacts)
    third = start(recipe, artifacts)  # a scheduler stops this one while it waits
    time.sleep(8.0)
    third.send_signal(signal.SIGTERM)
    out, err = third.communicate(timeout=60)
    assert third.returncode == 143 and "terminated: run the same command again to finish" in err, out + err
    assert "Traceback" not in out + err
    outs = [p.communicate(timeout=1800) for p in (first, second)]
    procs = [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip((first, second), outs)]
    for proc in procs:
        assert proc.returncode == EXIT_OK, said(proc)
        no_traceback_and_nothing_running(proc, artifacts)
    measured = [proc for proc in procs if "[q8_0] load sweep:" in proc.stdout]
    waited = [proc for proc in procs if "another run of this recipe" in proc.stdout]
    assert len(measured) == 1 and len(waited) == 1 and measured != waited
    # the one that waited finds the other's record, made from the inputs it has: that decision stands
    assert "nothing changed since run" in waited[0].stdout and "divergence vs" not in waited[0].stdout
    assert f"record stand (parent run {parent_run(measured[0])})" in " ".join(waited[0].stdout.split())


def test_a_full_disk_fails_cleanly_and_the_run_finishes_once_there_is_room(recipe, artifacts, tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this host cannot mount a tmpfs (needs root): the disk-full case is not run")
    try:
        small = mount / "artifacts"
        # the store and the tracking database (MLflow's files go where the experiment was made)
        shutil.copytree(artifacts, small, ignore=shutil.ignore_patterns("failed", "reports", "tmp", "mlflow-artifacts",
                                                                         "*.lock"))
        shutil.rmtree(entry_of(small, "evals", "f16"))
        filler = mount / "filler"

        def fill_disk(proc: subprocess.Popen) -> bool:
            if building(small, "evals"):
                # written until the disk is full (dd stops at ENOSPC, the file keeps what it wrote)
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
                return True
            return False

        proc, injected = run(recipe, small, fault=fill_disk)
        assert injected, said(proc)
        assert proc.returncode == EXIT_BROKEN, said(proc)
        no_traceback_and_nothing_running(proc, small)
        assert "No space left on device" in said(proc) or "disk full" in said(proc), said(proc)
        assert not entry_of(small, "evals", "f16").exists()
        filler.unlink()
        proc, _ = run(recipe, small)
        assert proc.returncode == EXIT_OK, said(proc)
        assert entry_of(small, "evals", "f16").is_dir()
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_force_makes_a_stage_again_and_replaces_its_entries(recipe, artifacts):
    before = set(finished(artifacts, "evals"))
    proc, _ = run(recipe, artifacts, "--force", "evals")
    assert proc.returncode == EXIT_OK, said(proc)
    no_traceback_and_nothing_running(proc, artifacts)
    assert "[f16] running task evals" in proc.stdout and "[q8_0] running task evals" in proc.stdout
    assert "load sweep:" not in proc.stdout and "quantize cached" in proc.stdout  # only the forced stage
    assert set(finished(artifacts, "evals")) == before  # the same keys, made anew
    assert sum("-replaced-" in p.name and p.name.startswith("evals-") for p in (artifacts / "failed").iterdir()) == 2


def test_no_secret_is_kept_anywhere(artifacts):
    """HF_TOKEN was set for every run above, and every server had an API key: none of it is in any
    file of the artifacts folder, the MLflow database included (failed builds' request files too)."""
    assert (artifacts / "failed").is_dir() and any((artifacts / "failed").iterdir())
    scanned = 0
    for path in artifacts.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            scanned += 1
            assert PLANTED.encode() not in data, path
            assert not API_KEY.search(data), path
    assert scanned > 50
