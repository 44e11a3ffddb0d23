"""The recipe's load, slo and hardware sections: every bad value refused before any work, named."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_recipe import demo_with, recipe_error, write_recipe


def load_with(tmp_path, **load) -> str:
    return recipe_error(write_recipe(tmp_path, demo_with(lambda d: d["load"].update(load))))


@pytest.mark.parametrize("load, words", [
    ({"levels": [4, 2]}, "load: levels: [4, 2] must be increasing, each once"),
    ({"levels": [1, 1]}, "must be increasing, each once"),
    ({"levels": [1.5]}, "are concurrent streams with profile concurrency: whole numbers"),
    ({"levels": [0, 1]}, "must all be positive"),
    ({"arrivals": "constant"}, "arrivals: applies to profile rate only"),
    ({"profile": "burst"}, "load.profile:"),
    ({"prompt_tokens": {"mean": 100, "min": 200}}, "min 200 and max None must bracket the mean 100"),
    ({"output_tokens": {"mean": 64, "sigma": 3}}, "load.output_tokens.sigma: unknown key"),
    ({"prompt_tokens": 900, "output_tokens": 200}, "prompts and outputs of up to 1100 tokens do not fit the llamacpp"
                                                   " server's context (engines.llamacpp.ctx_per_slot 1024)"),
    ({"prompt_tokens": {"mean": 512, "stdev": 128}}, "up to 1072 tokens do not fit"),  # mean + 4 stdev + 48
], ids=["decreasing", "repeated", "fractional-streams", "zero", "arrivals-without-rate", "unknown-profile",
        "min-above-mean", "unknown-length-key", "context", "context-by-stdev"])
def test_bad_load_settings_are_refused_by_field(tmp_path, load, words):
    assert words in load_with(tmp_path, **load)


def test_a_rate_profile_takes_fractional_levels(tmp_path):
    from pipeline.recipe.load import load_recipe

    path = write_recipe(tmp_path, demo_with(lambda d: d["load"].update(profile="rate", levels=[0.25, 0.5, 1.5],
                                                                       arrivals="constant")))
    recipe = load_recipe(path)
    assert recipe.load.levels == [0.25, 0.5, 1.5] and recipe.load.level_name(0.25) == "0.25 req/s"


@pytest.mark.parametrize("content, words", [
    (None, "not found"),
    ('{"prompt": "hi", "output_tokens": 8}\nnot json\n', "prompts.jsonl:2: not JSON"),
    ('{"prompt": "", "output_tokens": 8}\n', "prompts.jsonl:1: each line must be"),
    ('{"prompt": "hi", "output_tokens": 0}\n', "prompts.jsonl:1: each line must be"),
    ('{"prompt": "hi", "max_tokens": 8}\n', "prompts.jsonl:1: each line must be"),
    ('{"prompt": "hi", "output_tokens": 8}\n' * 3, "holds 3 prompts; a load level sends 13"),
], ids=["missing", "not-json", "empty-prompt", "zero-tokens", "wrong-key", "too-few"])
def test_a_bad_prompts_file_is_named_with_its_line(tmp_path, content, words):
    if content is not None:
        (tmp_path / "prompts.jsonl").write_text(content)
    message = load_with(tmp_path, prompts_file="prompts.jsonl", requests_per_level=12, warmup_requests=1)
    assert "load.prompts_file:" in message and words in message


def test_a_good_prompts_file_resolves_against_the_recipe(tmp_path):
    from pipeline.recipe.load import load_recipe

    (tmp_path / "traffic").mkdir()
    (tmp_path / "traffic" / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": f"question {i}", "output_tokens": 16}) + "\n" for i in range(20)))
    path = write_recipe(tmp_path, demo_with(lambda d: d["load"].update(prompts_file="traffic/prompts.jsonl")))
    assert load_recipe(path).load.prompts_file == (tmp_path / "traffic" / "prompts.jsonl").resolve()


@pytest.mark.parametrize("section, change, words", [
    ("slo", {"percentile": 100}, "slo.percentile:"),
    ("slo", {"ttft_ms": 0}, "slo.ttft_ms:"),
    ("slo", {"ttft_p95_ms": 3000}, "slo.ttft_p95_ms: unknown key. Did you mean 'ttft_ms'?"),
    ("hardware", {"usd_per_hour": 0}, "hardware.usd_per_hour:"),
    ("hardware", {"accelerators_per_replica": 0}, "hardware.accelerators_per_replica:"),
    ("hardware", {"target_qps": -1}, "hardware.target_qps:"),
], ids=["percentile", "zero-limit", "old-name", "free", "no-accelerator", "negative-qps"])
def test_bad_slo_and_hardware_are_refused_by_field(tmp_path, section, change, words):
    assert words in recipe_error(write_recipe(tmp_path, demo_with(lambda d: d[section].update(change))))


def test_an_unknown_tie_break_lists_the_allowed(tmp_path):
    message = recipe_error(write_recipe(tmp_path, demo_with(lambda d: d.update(promotion={"cost_tie_break": "name"}))))
    assert "promotion.cost_tie_break:" in message and "'quality'" in message and "'size'" in message
