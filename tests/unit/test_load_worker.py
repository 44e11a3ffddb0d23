"""The GuideLLM worker's own logic, without GuideLLM: what it asks for, how it reads the records."""

from __future__ import annotations

import pytest

from pipeline.measure import load
from pipeline.recipe.traffic import LoadConfig
from pipeline.workers.load_guidellm import error_class, invocations, records, scenario_spec


def request(tmp_path, **config):
    return load.request(LoadConfig(**config), "http://127.0.0.1:9", "k", "m", tmp_path, tmp_path)


# error strings GuideLLM 0.8.1 recorded against llama-server (wrong key, a killed server, a hung socket)
@pytest.mark.parametrize("message, status, expected", [
    ("HTTPStatusError(\"Client error '401 Unauthorized' for url 'http://127.0.0.1:18411/v1/completions'\")",
     "errored", "http_4xx"),
    ("HTTPStatusError(\"Server error '503 Service Unavailable' for url 'http://127.0.0.1:1/v1/completions'\")",
     "errored", "http_5xx"),
    ("RemoteProtocolError('peer closed connection without sending complete message body')", "errored", "connection"),
    ("ConnectError('All connection attempts failed')", "errored", "connection"),
    ("ReadTimeout('')", "errored", "timeout"),
    ("Request was cancelled", "cancelled", "cancelled"),
    ("ValueError('something else')", "errored", "other"),
])
def test_errors_are_classed_from_guidellms_messages(message, status, expected):
    assert error_class(message, status) == expected


def test_each_level_sends_its_requests_plus_one_warmup_per_stream(tmp_path):
    spec, overrides = scenario_spec(request(tmp_path, levels=[1, 4], requests_per_level=10, warmup_requests=2),
                                    tmp_path, [1, 4])
    assert overrides == [{"profile.streams": 1, "constraints[0].count": 12},
                         {"profile.streams": 4, "constraints[0].count": 18}]
    assert spec["profile"] == {"kind": "concurrent", "streams": 1}  # no GuideLLM warm-up: ours
    assert spec["data"][0] == {"kind": "synthetic_text", "prompt_tokens": 128, "output_tokens": 64}
    assert spec["backend"]["request_format"] == "/v1/completions" and spec["backend"]["validate_backend"] is False


def test_rate_levels_use_the_arrival_process_and_the_lengths_distribution(tmp_path):
    config = {"profile": "rate", "levels": [0.5, 2.0], "arrivals": "constant", "api": "chat", "seed": 7,
              "prompt_tokens": {"mean": 200, "stdev": 50, "min": 100, "max": 300}, "shared_prefix_tokens": 32}
    spec, overrides = scenario_spec(request(tmp_path, **config), tmp_path, [0.5, 2.0])
    assert spec["profile"] == {"kind": "constant", "rate": 0.5}
    assert [o["profile.rate"] for o in overrides] == [0.5, 2.0]
    assert spec["data"][0] == {"kind": "synthetic_text", "prompt_tokens": 200, "prompt_tokens_stdev": 50,
                               "prompt_tokens_min": 100, "prompt_tokens_max": 300, "output_tokens": 64,
                               "prefix_buckets": [{"prefix_tokens": 32, "prefix_count": 1}]}
    assert spec["seed"] == {"kind": "static", "value": 7}
    assert spec["backend"]["request_format"] == "/v1/chat/completions"


def _stats(start: float, end: float, ok: bool = True, error: str | None = None, status: str = "completed") -> dict:
    timings = {"request_start": start, "request_end": end if ok else None, "first_token_iteration": start + 0.1,
               "last_token_iteration": end - 0.01}
    row = {"info": {"timings": timings, "error": error, "status": status, "completed_at": end}}
    if ok:
        row.update(request_start_time=start, request_end_time=end, prompt_tokens=16, output_tokens=4)
    return row


def test_records_mark_the_first_request_of_each_stream_as_warmup_and_time_the_rest(tmp_path):
    benchmark = {"requests": {
        "successful": [_stats(0.0, 1.0), _stats(0.0, 1.1), _stats(1.0, 2.0), _stats(1.1, 2.1)],
        "errored": [_stats(2.0, 2.5, ok=False, error="ReadTimeout('')", status="errored")],
        "incomplete": [_stats(2.1, 3.0, ok=False, error="Request was cancelled", status="cancelled")]}}
    [level] = records({"benchmarks": [benchmark]}, request(tmp_path, levels=[2], warmup_requests=1), [2.0], [0])
    assert [r.warmup for r in level.requests] == [True, True, False, False, False, False]
    assert (level.window_start_s, level.window_end_s) == (1.0, 2.5)  # the cancelled one does not stretch it
    assert [r.error_class for r in level.requests] == [None, None, None, None, "timeout", "cancelled"]
    assert level.requests[2].first_token_s == pytest.approx(1.1) and level.requests[2].output_tokens == 4


def test_repeats_pass_through_every_level_in_turn(tmp_path):
    [run] = invocations(request(tmp_path, levels=[1, 4], repeats=3))
    assert [(b.round, b.level) for b in run] == [(0, 1), (0, 4), (1, 1), (1, 4), (2, 1), (2, 4)]
    spec, overrides = scenario_spec(request(tmp_path, levels=[1, 4], repeats=3, requests_per_level=6,
                                            warmup_requests=1), tmp_path, [b.level for b in run])
    assert [(o["profile.streams"], o["constraints[0].count"]) for o in overrides] == [(1, 7), (4, 10)] * 3


def test_a_prompts_file_gets_one_invocation_per_benchmark_each_on_fresh_rows(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "p{i}", "output_tokens": 8}}\n' for i in range(40)))
    job = request(tmp_path, levels=[1, 2], repeats=2, requests_per_level=3, warmup_requests=1, prompts_file=prompts)
    runs = invocations(job)
    assert [[(b.index, b.round, b.level) for b in run] for run in runs] == [[(0, 0, 1)], [(1, 0, 2)], [(2, 1, 1)],
                                                                             [(3, 1, 2)]]
    firsts = []
    for run in runs:
        spec, _ = scenario_spec(job, tmp_path, [run[0].level], run[0].index)
        firsts.append((tmp_path / f"prompts-{run[0].index}.jsonl").read_text().splitlines()[0])
    # each benchmark starts 5 rows (3 measured + 1 warm-up per stream at the widest level) after the last
    assert firsts == [f'{{"prompt": "p{i}", "output_tokens_count": 8}}' for i in (0, 5, 10, 15)]
