"""Typed hand-offs: every worker request and result crosses the process boundary as a checked
dataclass; a missing, unknown or mistyped field fails at the boundary, naming class and field."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import pytest

from pipeline.toolenv import ToolEnv, ToolFailed
from pipeline.workers import handoff, messages
from pipeline.workers.messages import (AlignmentSummary, EvalOutput, EvalRequest, EvalTask, GGUFFile, GGUFTensor,
                                       Modifier, OneshotRequest, TaskScore)
from tests.unit.handoff_worker import Echoed, EchoRequest

TASK = EvalTask(label="a", spec="qg_a", include_path="/t", cwd="/", subtasks=["qg_a"], metric="acc", filter="none")
EVAL = EvalRequest(model_path="/m", base_url="http://127.0.0.1:1", api_key="k", served_model="v", out="/o",
                   tasks=[TASK], max_context=1024, threads=2, concurrency=4)


def test_every_request_declares_a_result_type_that_is_a_message():
    requests = [c for c in vars(messages).values() if isinstance(c, type) and c.__name__.endswith("Request")]
    assert len(requests) >= 8
    for request in requests:
        assert dataclasses.is_dataclass(request.result), request
        assert all(f.kw_only for f in dataclasses.fields(request)), request


def test_nested_messages_round_trip():
    output = EvalOutput(alignment=AlignmentSummary(passed=True, n=12, median_abs_diff=0.01, max_abs_diff=0.2,
                                                   confident_mismatches=0, near_tie_flips=1, reason=""),
                        tasks={"agreement": TaskScore(value=0.9, metric="acc", n=600, samples_file="s.jsonl")},
                        seconds=3)
    back = handoff.decode(handoff.encode(output), EvalOutput)
    assert back == output and isinstance(back.tasks["agreement"], TaskScore) and isinstance(back.seconds, float)
    gguf = GGUFFile(file_bytes=1, n_params=2, tensor_bytes=1, bits_per_weight=None, tensor_type_counts={"F16": 1},
                    tensor_types_by_role={"w": {"F16": 1}}, tensors=[GGUFTensor(name="w", type="F16", shape=[2])])
    assert handoff.decode(handoff.encode(gguf), GGUFFile).tensors[0] == GGUFTensor(name="w", type="F16", shape=[2])
    oneshot = OneshotRequest(model_dir="/m", out="/o", calibration=None,
                             modifiers=[Modifier(module="m", name="X", args={"ignore": ["lm_head"], "n": 1})])
    assert handoff.decode(handoff.encode(oneshot), OneshotRequest) == oneshot


@pytest.mark.parametrize("change, says", [
    (lambda f: f.pop("max_context"), "EvalRequest is missing field(s) max_context"),
    (lambda f: f.update(n_ctx=1024), "unknown field(s) n_ctx for EvalRequest"),
    (lambda f: f.update(threads="2"), "EvalRequest.threads: '2' is not int"),
    (lambda f: f.update(threads=True), "EvalRequest.threads: True is not int"),
    (lambda f: f.update(tasks="agreement"), "EvalRequest.tasks"),
    (lambda f: f["tasks"][0].update(limit="all"), "EvalRequest.tasks[0].limit: 'all' is not"),
    (lambda f: f["tasks"][0].update(subtasks=["a", 3]), "EvalRequest.tasks[0].subtasks[1]: 3 is not str"),
    (lambda f: f.update(model_path=None), "EvalRequest.model_path: None is not str"),
], ids=["missing", "unknown", "str-for-int", "bool-for-int", "str-for-list", "nested", "item-type", "none"])
def test_a_message_that_drifted_fails_naming_class_and_field(change, says):
    data = handoff.encode(EVAL)
    change(data["fields"])
    with pytest.raises(handoff.HandoffError) as info:
        handoff.decode(data, EvalRequest)
    assert says in str(info.value)


def test_the_sender_checks_too():
    with pytest.raises(handoff.HandoffError, match="EvalTask.limit: 'all' is not"):
        handoff.encode(dataclasses.replace(EVAL, tasks=[dataclasses.replace(TASK, limit="all")]))


def test_a_message_of_another_type_is_refused():
    with pytest.raises(handoff.HandoffError, match="got a 'EvalRequest', expected EvalOutput"):
        handoff.decode(handoff.encode(EVAL), EvalOutput)


@pytest.fixture
def this_env(tmp_path) -> ToolEnv:
    """The orchestrator's own environment, as a tool environment: the worker needs only the stdlib."""
    return ToolEnv("orchestrator", Path(sys.executable).parent.parent)


def test_a_worker_round_trip_is_typed_on_both_sides(this_env, tmp_path):
    result = this_env.run_worker("tests.unit.handoff_worker", EchoRequest(words=["a", "b", "c"]), tmp_path, "w.log",
                                 timeout_s=60)
    assert result == Echoed(words=["c", "b", "a"], count=3)
    assert not list(tmp_path.glob("*.json"))  # request and result files are cleaned up


@pytest.mark.parametrize("misbehave, says", [("type", "returned a Other, not a Echoed"),
                                             ("field", "Echoed.count: 'three' is not int")])
def test_a_worker_that_breaks_its_contract_fails(this_env, tmp_path, misbehave, says):
    with pytest.raises(ToolFailed) as info:
        this_env.run_worker("tests.unit.handoff_worker", EchoRequest(words=["a"], misbehave=misbehave), tmp_path,
                            "w.log", timeout_s=60)
    assert says in str(info.value) and "\n" not in str(info.value)  # the log's last error line, in one line


def test_a_worker_past_its_time_limit_is_stopped_with_its_children(this_env, tmp_path):
    pid_file = tmp_path / "child.pid"
    with pytest.raises(ToolFailed, match="ran past its 3 s limit and was stopped with its children"):
        this_env.run_worker("tests.unit.handoff_worker", EchoRequest(words=[str(pid_file)], misbehave="hang"),
                            tmp_path, "w.log", timeout_s=3)
    child = int(pid_file.read_text())
    for _ in range(50):  # reaped by init once killed; give it a moment
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the worker's child {child} is still running")


def test_the_hosts_timeout_scale_stretches_every_limit(this_env, tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("QUANTGATE_TIMEOUT_SCALE", "0.5")
    started = time.monotonic()
    with pytest.raises(ToolFailed, match="ran past its 2 s limit"):  # 4 s asked, halved on this host
        this_env.run_worker("tests.unit.handoff_worker", EchoRequest(words=[str(pid_file)], misbehave="hang"),
                            tmp_path, "w.log", timeout_s=4)
    assert time.monotonic() - started < 3.5
