"""Content-addressed store: stable keys, entries that exist only when a stage finished, are reused only
while their checksums hold, are made by one run at a time, and never keep a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline import secrecy
from pipeline.artifacts import CHECKSUMS_FILE, RESULT_FILE, Store, content_key, read_json, write_json
from pipeline.toolenv import ToolFailed

REPO = Path(__file__).resolve().parents[2]


# --- content_key -----------------------------------------------------------------------------


def test_key_ignores_dict_key_order_at_every_level():
    a = content_key("quantize", {"kind": "gguf", "type": "Q4_K_M", "tools": {"x": "1", "y": "2"}})
    b = content_key("quantize", {"tools": {"y": "2", "x": "1"}, "type": "Q4_K_M", "kind": "gguf"})
    assert a == b


def test_key_is_16_hex():
    key = content_key("x", 1)
    assert len(key) == 16 and int(key, 16) >= 0


@pytest.mark.parametrize("other", [
    ("quantize", {"kind": "gguf", "type": "Q4_K_S"}),  # a value
    ("quantize", {"kind": "gguf", "typ": "Q4_K_M"}),  # a key
    ("evals", {"kind": "gguf", "type": "Q4_K_M"}),  # the stage
    ({"kind": "gguf", "type": "Q4_K_M"}, "quantize"),  # the order of the parts
    ("quantize", {"kind": "gguf", "type": "Q4_K_M"}, None),  # an extra part
    ("quantize", [{"kind": "gguf", "type": "Q4_K_M"}]),  # the structure
])
def test_key_differs_for_different_inputs(other):
    assert content_key("quantize", {"kind": "gguf", "type": "Q4_K_M"}) != content_key(*other)


def test_key_distinguishes_types_that_print_alike():
    assert content_key(1) != content_key("1")
    assert content_key(None) != content_key("None")


def test_key_is_stable_across_processes(tmp_path):
    parts = ("bench", "abc", {"requests": 16, "concurrency": 4, "nested": {"b": [1, 2], "a": None}})
    code = ("import sys, json; from pipeline.artifacts import content_key; "
            f"print(content_key(*json.loads({json.dumps(json.dumps(parts))})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == content_key(*parts)


# --- Store.building --------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    """What a stage folder holds besides its lock files (those stay: removing one would race)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def test_successful_build_becomes_the_entry(tmp_path):
    store = Store(tmp_path)
    assert not store.has("variants", "k1")
    with store.building("variants", "k1") as scratch:
        (scratch / "model.gguf").write_bytes(b"weights")
        write_json(scratch / RESULT_FILE, {"ok": 1})
    entry = store.entry("variants", "k1")
    assert store.has("variants", "k1")
    assert (entry / "model.gguf").read_bytes() == b"weights"
    assert store.result("variants", "k1") == {"ok": 1}
    assert leftovers(tmp_path / "variants") == ["k1"]  # the scratch folder was renamed, not copied
    assert not (tmp_path / "failed").exists()


def test_exception_leaves_no_entry_and_keeps_the_scratch_under_failed(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(ValueError, match="quantizer crashed"):
        with store.building("variants", "k1") as scratch:
            (scratch / "quantize.log").write_text("the reason it failed\n")
            write_json(scratch / RESULT_FILE, {"ok": 1})  # written, but the stage still failed
            raise ValueError("quantizer crashed")
    assert not store.has("variants", "k1")
    assert not store.entry("variants", "k1").exists()
    assert leftovers(tmp_path / "variants") == []
    failed = list((tmp_path / "failed").iterdir())
    assert len(failed) == 1 and failed[0].name.startswith("variants-k1-")
    assert (failed[0] / "quantize.log").read_text() == "the reason it failed\n"
    assert not (failed[0] / RESULT_FILE).exists()


def test_keyboard_interrupt_is_also_cleaned_up(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with store.building("evals", "k2"):
            raise KeyboardInterrupt
    assert not store.has("evals", "k2") and leftovers(tmp_path / "evals") == []


def test_finishing_without_result_json_raises_and_leaves_no_entry(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError, match=RESULT_FILE):
        with store.building("bench", "k3") as scratch:
            (scratch / "partial.txt").write_text("half")
    assert not store.has("bench", "k3")
    assert not store.entry("bench", "k3").exists()
    assert leftovers(tmp_path / "bench") == []
    assert len(list((tmp_path / "failed").iterdir())) == 1


def test_unfinished_old_entry_is_replaced(tmp_path):
    store = Store(tmp_path)
    stale = store.entry("variants", "k4")
    stale.mkdir(parents=True)
    (stale / "junk").write_text("from a crash")
    assert not store.has("variants", "k4")
    with store.building("variants", "k4") as scratch:
        write_json(scratch / RESULT_FILE, {"fresh": True})
    assert store.result("variants", "k4") == {"fresh": True}
    assert not (stale / "junk").exists()


# --- write_json ------------------------------------------------------------------------------


@dataclass
class Sample:
    name: str
    path: Path


def test_write_json_round_trips_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_json(target, {"b": 1, "a": [1.5, None]})
    write_json(target, {"b": 2})  # overwrite in place
    assert read_json(target) == {"b": 2}
    assert leftovers(tmp_path / "sub") == ["result.json"]


def test_write_json_accepts_dataclasses_and_paths(tmp_path):
    write_json(tmp_path / "x.json", Sample("q4", Path("/a/b")))
    assert read_json(tmp_path / "x.json") == {"name": "q4", "path": "/a/b"}


def test_write_json_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "result.json"
    write_json(target, {"v": 1})

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json(target, {"v": Unserialisable()})
    assert read_json(target) == {"v": 1}


def test_a_tool_failure_names_its_log_where_it_was_kept_and_is_not_retried(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(ToolFailed) as info:
        with store.building("gguf-base", "b1") as scratch:
            (scratch / "convert.log").write_text("Traceback (most recent call last):\nKeyError: 'rope_theta'\n")
            raise ToolFailed("pipeline.workers.gguf failed (exit 1)", scratch / "convert.log")
    failure = info.value
    assert failure.log_path.parent.parent == tmp_path / "failed" and failure.log_path.is_file()
    assert str(failure) == f"pipeline.workers.gguf failed (exit 1): KeyError: 'rope_theta'; log {failure.log_path}"
    ran = []
    with pytest.raises(ToolFailed) as again:  # the next variant that needs this base
        with store.building("gguf-base", "b1"):
            ran.append(True)
    assert ran == [] and len(list((tmp_path / "failed").iterdir())) == 1
    assert str(again.value).startswith("gguf-base b1 failed earlier in this run (pipeline.workers.gguf failed")
    assert again.value.log_path == failure.log_path
    with Store(tmp_path).building("gguf-base", "b1") as scratch:  # a new run tries again
        write_json(scratch / RESULT_FILE, {"ok": 1})


def test_discard_moves_a_finished_entry_out_of_reach(tmp_path):
    store = Store(tmp_path)
    with store.building("evals", "e1") as scratch:
        (scratch / "lmeval.log").write_text("scored\n")
        write_json(scratch / RESULT_FILE, {"ok": 1})
    kept = store.discard("evals", "e1")
    assert not store.has("evals", "e1") and not store.entry("evals", "e1").exists()
    assert kept is not None and (kept / "lmeval.log").read_text() == "scored\n" and not (kept / RESULT_FILE).exists()
    assert store.discard("evals", "e1") is None


# --- checksums: an entry is reused only while its files are those it was made with --------------


def finished_entry(store: Store, stage: str = "variants", key: str = "k1") -> Path:
    with store.building(stage, key) as scratch:
        (scratch / "model.gguf").write_bytes(b"weights" * 100)
        write_json(scratch / RESULT_FILE, {"ok": 1})
    return store.entry(stage, key)


def test_a_finished_entry_lists_every_file_with_size_and_sha256(tmp_path):
    entry = finished_entry(Store(tmp_path))
    listed = read_json(entry / CHECKSUMS_FILE)["files"]
    assert set(listed) == {"model.gguf", RESULT_FILE}
    assert listed["model.gguf"]["bytes"] == 700 and len(listed["model.gguf"]["sha256"]) == 64
    assert Store(tmp_path).has("variants", "k1")  # a new run verifies it, and it holds


@pytest.mark.parametrize("damage, said", [
    (lambda e: (e / "model.gguf").write_bytes(b"weights" * 99 + b"Weights"), "model.gguf does not match its sha256"),
    (lambda e: (e / "model.gguf").write_bytes(b"weights"), "model.gguf has 7 bytes, 700 when made"),
    (lambda e: (e / "model.gguf").unlink(), "model.gguf is missing"),
    (lambda e: (e / CHECKSUMS_FILE).write_text("{not json"), f"{CHECKSUMS_FILE} is not readable (damaged)"),
])
def test_a_damaged_entry_is_moved_aside_said_once_and_made_again(tmp_path, damage, said):
    damage(finished_entry(Store(tmp_path)))
    heard: list[str] = []
    store = Store(tmp_path, heard.append)  # the next run
    assert not store.has("variants", "k1") and not store.entry("variants", "k1").exists()
    assert len(heard) == 1 and heard[0].startswith(f"variants/k1: {said}") and heard[0].endswith("made again")
    moved = [p for p in (tmp_path / "failed").iterdir() if p.name.startswith("variants-k1-damaged-")]
    assert len(moved) == 1 and not (moved[0] / RESULT_FILE).exists()  # kept for a look, never read as finished
    assert finished_entry(store).is_dir() and store.has("variants", "k1")


def test_an_entry_finished_before_checksums_existed_is_adopted_once_then_checked(tmp_path):
    entry = finished_entry(Store(tmp_path))
    (entry / CHECKSUMS_FILE).unlink()  # as an older quantgate left it: finished, never checksummed
    heard: list[str] = []
    assert Store(tmp_path, heard.append).has("variants", "k1")
    assert heard == ["variants/k1: made before entries were checksummed; its checksums are recorded now"]
    assert set(read_json(entry / CHECKSUMS_FILE)["files"]) == {"model.gguf", RESULT_FILE}
    (entry / "model.gguf").write_bytes(b"x" * 700)
    assert not Store(tmp_path).has("variants", "k1")  # from now on a change is found


def test_a_verified_entry_is_hashed_once_per_run_and_plan_does_not_hash(tmp_path):
    entry = finished_entry(Store(tmp_path))
    store = Store(tmp_path)
    assert store.has("variants", "k1")
    (entry / "model.gguf").write_bytes(b"x" * 700)  # changed after this run verified it: not looked at again
    assert store.has("variants", "k1")
    assert Store(tmp_path, verify=False).has("variants", "k1")  # `plan` says what exists, hashes nothing
    assert not Store(tmp_path).has("variants", "k1")  # the next run finds it


def later(path: Path) -> None:
    """Give a file a modification time after its entry's checksums (filesystem clocks can be coarse)."""
    recorded = (path.parent / CHECKSUMS_FILE).stat().st_mtime_ns
    os.utime(path, ns=(recorded + 1_000_000, recorded + 1_000_000))


@pytest.mark.parametrize("change, untouched", [
    (lambda e: None, True),
    (lambda e: later(e / "model.gguf"), False),  # the same size, written since: a byte may have changed
    (lambda e: (e / "model.gguf").write_bytes(b"weights"), False),
    (lambda e: (e / "model.gguf").unlink(), False),
    (lambda e: (e / RESULT_FILE).unlink(), False),
    (lambda e: (e / CHECKSUMS_FILE).write_text("{not json"), False),
])
def test_untouched_trusts_sizes_and_times_only_while_nothing_was_written(tmp_path, change, untouched):
    entry = finished_entry(Store(tmp_path))
    change(entry)
    assert Store(tmp_path).untouched("variants", "k1") is untouched


def test_an_entry_written_since_but_hashed_intact_is_trusted_again(tmp_path):
    entry = finished_entry(Store(tmp_path))
    later(entry / "model.gguf")
    assert not Store(tmp_path).untouched("variants", "k1")
    assert Store(tmp_path).has("variants", "k1")  # hashed: the bytes it was made with
    assert Store(tmp_path).untouched("variants", "k1")


def test_store_names_cannot_leave_the_store(tmp_path):
    store = Store(tmp_path)
    for stage, key in (("variants", "../k"), ("..", "k"), ("variants", "a/b"), ("variants", ".."), ("x/../..", "k")):
        with pytest.raises(ValueError, match="not a store name"):
            store.entry(stage, key)


# --- one builder per key, across processes -------------------------------------------------------

BUILDER = """
import sys, time
from pathlib import Path
from pipeline.artifacts import RESULT_FILE, Store, write_json
store = Store(Path(sys.argv[1]), lambda m: print(m, flush=True))
with store.lock("variants", "k1"):
    if store.has("variants", "k1"):
        print("reused", flush=True)
    else:
        with store.building("variants", "k1") as scratch:
            print("building", flush=True)
            time.sleep(float(sys.argv[2]))
            (scratch / "model.gguf").write_text(sys.argv[3])
            write_json(scratch / RESULT_FILE, {"by": sys.argv[3]})
"""


def test_a_second_run_waits_for_the_first_builder_and_reuses_its_entry(tmp_path):
    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path), "2.0", name], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = start("first")
    assert first.stdout.readline().strip() == "building"  # it holds the lock now
    second = start("second")
    out_first, out_second = first.communicate(timeout=30)[0], second.communicate(timeout=30)[0]
    assert first.returncode == 0 and second.returncode == 0, out_first + out_second
    assert out_second.splitlines() == ["variants/k1 is being made by another run; waiting for it", "reused"]
    assert Store(tmp_path).result("variants", "k1") == {"by": "first"}
    assert leftovers(tmp_path / "variants") == ["k1"]


def test_a_builder_that_did_not_lock_never_replaces_a_finished_entry(tmp_path):
    store = Store(tmp_path)
    entry = finished_entry(store)
    with Store(tmp_path).building("variants", "k1") as scratch:  # a second run that skipped the check
        (scratch / "model.gguf").write_bytes(b"other")
        write_json(scratch / RESULT_FILE, {"ok": 2})
    assert (entry / "model.gguf").read_bytes() == b"weights" * 100 and store.result("variants", "k1") == {"ok": 1}
    assert leftovers(tmp_path / "variants") == ["k1"] and Store(tmp_path).has("variants", "k1")


def test_the_lock_of_a_killed_builder_is_released_and_its_scratch_cleared(tmp_path):
    builder = subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path), "60", "killed"], cwd=REPO, text=True,
                               stdout=subprocess.PIPE)
    assert builder.stdout.readline().strip() == "building"
    builder.kill()  # a machine that dies mid-build: its scratch folder stays behind
    builder.wait()
    assert [p.name.startswith(".k1.tmp-") for p in (tmp_path / "variants").iterdir() if not p.name.endswith(".lock")] == [True]
    entry = finished_entry(Store(tmp_path))  # no wait: the OS released the dead run's lock
    assert entry.is_dir() and leftovers(tmp_path / "variants") == ["k1"]
    assert [p.name.split("-")[2] for p in (tmp_path / "failed").iterdir()] == ["abandoned"]


# --- secrets never stay in the store ---------------------------------------------------------------


def test_secrets_are_masked_in_finished_and_failed_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_plantedSECRET123")
    api_key = secrecy.register("qg-" + "ab" * 16)
    store = Store(tmp_path)
    with store.building("evals", "e1") as scratch:
        (scratch / "lmeval.log").write_text(f"token hf_plantedSECRET123 and key {api_key}\n")
        (scratch / "weights.bin").write_bytes(b"\0hf_plantedSECRET123")  # binary: left as it is
        write_json(scratch / RESULT_FILE, {"tracking": "http://me:hunter22@mlflow:5000/"})
    entry = store.entry("evals", "e1")
    assert (entry / "lmeval.log").read_text() == "token *** and key ***\n"
    assert store.result("evals", "e1") == {"tracking": "http://me:***@mlflow:5000/"}
    assert Store(tmp_path).has("evals", "e1")  # checksummed after masking
    with pytest.raises(ToolFailed):
        with store.building("evals", "e2") as scratch:
            (scratch / "lmeval.log.request.json").write_text(json.dumps({"api_key": api_key}))
            raise ToolFailed("lm-eval failed", scratch / "lmeval.log.request.json")
    kept = next((tmp_path / "failed").iterdir())
    assert api_key not in (kept / "lmeval.log.request.json").read_text()


def test_a_forced_stage_is_made_again_and_replaces_its_entry_only_once_the_new_one_exists(tmp_path):
    entry = finished_entry(Store(tmp_path), "evals", "e1")
    forced = Store(tmp_path, force=frozenset({"evals"}))
    assert not forced.has("evals", "e1") and entry.is_dir()  # to be made again; the old one stays meanwhile
    assert forced.has("variants", "k9") is False and Store(tmp_path).has("evals", "e1")  # other stages, other runs
    with pytest.raises(ValueError):
        with forced.building("evals", "e1"):
            raise ValueError("the new measurement failed")
    assert Store(tmp_path).result("evals", "e1") == {"ok": 1}  # nothing lost
    with forced.building("evals", "e1") as scratch:
        write_json(scratch / RESULT_FILE, {"ok": 2})
    assert forced.has("evals", "e1") and forced.result("evals", "e1") == {"ok": 2}  # once per run
    replaced = [p for p in (tmp_path / "failed").iterdir() if "-replaced-" in p.name]
    assert len(replaced) == 1 and (replaced[0] / "model.gguf").read_bytes() == b"weights" * 100
