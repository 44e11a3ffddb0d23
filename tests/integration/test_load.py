"""The load sweep for real: GuideLLM (its own environment) against llama-server serving the demo GGUF
on loopback. The workload is what the recipe says, levels are paced as asked, and broken servers
(wrong key, a hung socket, a server killed mid-sweep) end as errors counted by class, never a crash.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from pipeline.capacity import assess
from pipeline.engines.server import ServerProcess
from pipeline.measure import load
from pipeline.measure.latency import measured, summarize
from pipeline.recipe.traffic import SLO, Hardware, LoadConfig
from pipeline.settings import Settings
from pipeline.toolenv import llamacpp_binary, tool_env
from pipeline.workers.messages import LoadOutput

pytestmark = pytest.mark.integration

API_KEY = "test-key"


@pytest.fixture(scope="module")
def guidellm_env():
    env = tool_env(load.ENV, Settings().envs)
    if not env.python.is_file():
        pytest.fail("the guidellm environment is missing: run `make setup` (make test does)")
    return env


def llama_server(llamacpp, gguf: Path, log: Path) -> ServerProcess:
    def argv(port: int) -> list[str]:
        return [str(llamacpp_binary(llamacpp, "llama-server")), "--model", str(gguf), "--host", "127.0.0.1",
                "--port", str(port), "--api-key", API_KEY, "--alias", "demo", "--threads", "1", "--threads-batch",
                "1", "--parallel", "2", "--ctx-size", "1024", "--no-webui"]
    return ServerProcess(argv, "/health", log, 60)


@pytest.fixture(scope="module")
def server(llamacpp, demo_gguf, tmp_path_factory):
    with llama_server(llamacpp, demo_gguf, tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running


def sweep(env, base_url: str, tokenizer: Path, out: Path, api_key: str = API_KEY, **config) -> LoadOutput:
    job = load.request(LoadConfig(**{"repeats": 1, **config}), base_url, api_key, "demo", tokenizer, out)
    return load.generate(env, job, out, timeout_s=600)


def test_concurrency_sweep_sends_the_recipes_workload(guidellm_env, server, tiny_model, tmp_path):
    output = sweep(guidellm_env, server.ready_url.removesuffix("/health"), tiny_model, tmp_path,
                   levels=[1, 2], requests_per_level=5, warmup_requests=1, prompt_tokens=48, output_tokens=12)
    assert output.generator == "guidellm==0.8.1"
    assert [level.level for level in output.levels] == [1.0, 2.0]
    for level in output.levels:
        records = measured(level)
        # GuideLLM sends the count asked for, but now and then loses one request's result (seen in CI and
        # in 1 of 8 repeats here: 4 measured, its scheduler still counting the 5th as processing)
        assert len(records) + level.unreported == 5 and level.unreported <= 1 and all(r.ok for r in records)
        # warm-up requests were sent but are not in the measured window
        assert len(level.requests) > len(records) and min(r.start_s for r in level.requests) < level.window_start_s
        assert {r.prompt_tokens for r in records} == {48}  # exact, in the model's tokenizer
        assert {r.output_tokens for r in records} == {12}  # ignore_eos: the full length every time
        assert all(r.start_s < r.first_token_s <= r.last_token_s <= r.end_s for r in records)
    one, two = (summarize([level], str(level.level)) for level in output.levels)
    assert 0.8 < one.mean_in_flight <= 1.05 and 1.5 < two.mean_in_flight <= 2.05
    assert (tmp_path / "guidellm.json").is_file()


def test_constant_rate_spaces_the_arrivals(guidellm_env, server, tiny_model, tmp_path):
    output = sweep(guidellm_env, server.ready_url.removesuffix("/health"), tiny_model, tmp_path, profile="rate",
                   arrivals="constant", levels=[2.0], requests_per_level=6, warmup_requests=0, prompt_tokens=16,
                   output_tokens=4, api="chat")
    starts = sorted(r.start_s for r in output.levels[0].requests)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) >= 6 and all(r.ok for r in output.levels[0].requests)
    assert sum(gaps) / len(gaps) == pytest.approx(0.5, abs=0.1)  # 2 requests/s


def test_prompts_file_is_replayed_with_its_output_lengths(guidellm_env, server, tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Question {i}: what colour is the sky?", "output_tokens": {3 + i % 3}}}\n'
                               for i in range(30)))
    output = sweep(guidellm_env, server.ready_url.removesuffix("/health"), tiny_model, tmp_path / "out",
                   levels=[1, 2], requests_per_level=4, warmup_requests=0, prompts_file=prompts)
    for level in output.levels:
        assert {r.output_tokens for r in level.requests} <= {3, 4, 5} and all(r.ok for r in level.requests)
    assert sorted((tmp_path / "out").glob("guidellm-*.json"))  # one invocation per level, each its own rows


def test_a_wrong_api_key_is_counted_as_http_4xx_and_no_level_meets_the_slo(guidellm_env, server, tiny_model,
                                                                         tmp_path):
    config = {"levels": [1], "requests_per_level": 4, "warmup_requests": 0, "prompt_tokens": 16, "output_tokens": 4}
    output = sweep(guidellm_env, server.ready_url.removesuffix("/health"), tiny_model, tmp_path, api_key="wrong",
                   **config)
    summary = summarize([output.levels[0]], "1 stream")
    assert summary.succeeded == 0 and set(summary.errors) == {"http_4xx"} and summary.error_rate == 1.0
    assert "401" in summary.first_error
    capacity = assess(output, LoadConfig(**config), SLO(ttft_ms=1000), Hardware(name="ci", usd_per_hour=1), None)
    assert not capacity.meets_slo and "error rate 1.000 above 0.0" in capacity.reason


def test_a_hung_server_ends_each_request_at_its_timeout(guidellm_env, tiny_model, tmp_path):
    """A socket that accepts and never answers (a stand-in for a wedged server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    started = time.monotonic()
    try:
        output = sweep(guidellm_env, f"http://127.0.0.1:{listener.getsockname()[1]}", tiny_model, tmp_path,
                       levels=[1], requests_per_level=2, warmup_requests=0, prompt_tokens=16, output_tokens=4,
                       request_timeout_s=3, max_seconds_per_level=60)
    finally:
        stop.set()
        for conn in held:
            conn.close()
        listener.close()
    records = output.levels[0].requests
    assert records and all(not r.ok and r.error_class == "timeout" for r in records)
    assert all(2.5 < r.end_s - r.start_s < 10 for r in records)  # each ended at its 3 s timeout
    assert time.monotonic() - started < 120


def test_a_server_killed_mid_sweep_leaves_connection_errors_not_a_crash(guidellm_env, llamacpp, demo_gguf,
                                                                        tiny_model, tmp_path):
    log = tmp_path / "victim.log"
    victim = llama_server(llamacpp, demo_gguf, log)
    victim.start()
    done = threading.Event()

    def kill_after_three_requests() -> None:  # the server's log says when a request finished
        while not done.wait(0.2):
            if log.read_text(errors="replace").count("stop processing") >= 3:
                os.killpg(victim.proc.pid, signal.SIGKILL)
                return

    threading.Thread(target=kill_after_three_requests, daemon=True).start()
    try:
        output = sweep(guidellm_env, victim.ready_url.removesuffix("/health"), tiny_model, tmp_path / "out",
                       levels=[1, 2], requests_per_level=12, warmup_requests=0, prompt_tokens=32, output_tokens=24,
                       max_seconds_per_level=30)
    finally:
        done.set()
        victim.stop()
    summaries = [summarize([level], str(level.level)) for level in output.levels]
    assert summaries[0].succeeded >= 1  # it served until it was killed
    errors = {cls for s in summaries for cls in s.errors}
    assert errors and errors <= {"connection", "other"} and "connection" in errors
    # a dead server ends the level at the error budget, not after thousands of instant failures
    assert all(sum(s.errors.values()) <= 12 + 2 for s in summaries)
