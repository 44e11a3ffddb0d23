"""Content-addressed store: stable keys, and entries that exist only when a stage finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.artifacts import RESULT_FILE, Store, content_key, read_json, write_json
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
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


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
