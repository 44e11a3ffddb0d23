"""Recipe checks for the llm-compressor / vLLM variants, made before any heavy work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.measure.texts import text_file
from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError
from pipeline.workers.calibration import builtin_text_count, builtin_texts, file_texts


def write(tmp_path: Path, variants: list[dict], calibration: dict | None = None, hidden: int = 576,
          intermediate: int = 1536) -> Path:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": 2, "num_attention_heads": 9}))
    recipe = {
        "name": "t", "model": {"kind": "local", "path": "model"},
        "variants": [{"name": "bf16", "kind": "hf", "reference": True}] + variants,
        "evals": {"tasks": ["agreement"]}, "hardware": {"name": "x", "usd_per_hour": 1},
        "tracking": {"experiment": "x", "registered_model": "x"},
    }
    if calibration is not None:
        recipe["calibration"] = calibration
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def error(path: Path) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return str(info.value)


def test_all_four_schemes_validate_with_fitting_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, [{"name": k, "kind": k} for k in
                                          ("fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq")]))
    assert [v.engine for v in recipe.variants] == ["vllm"] * 5
    assert recipe.variants[3].group_size == 64  # the default fits 576 and 1536 (the preset 128 does not)


def test_group_size_that_does_not_divide_a_width_is_refused_with_the_sizes_that_fit(tmp_path):
    message = error(write(tmp_path, [{"name": "g", "kind": "w4a16_gptq", "group_size": 128}]))
    assert "r.yaml" in message and "variants[1].group_size: 128 does not divide" in message
    assert "576" in message and "64" in message and "192" in message


def test_group_size_must_divide_the_mlp_width_too(tmp_path):
    message = error(write(tmp_path, [{"name": "g", "kind": "w4a16_awq", "group_size": 96}], hidden=576,
                          intermediate=1000))
    assert "intermediate_size" in message and "1000" in message


def test_channel_wise_needs_no_divisor(tmp_path):
    recipe = load_recipe(write(tmp_path, [{"name": "g", "kind": "w4a16_gptq", "group_size": None}]))
    assert recipe.variants[1].group_size is None


def test_ignore_pattern_matching_nothing_is_refused(tmp_path):
    message = error(write(tmp_path, [{"name": "g", "kind": "fp8_dynamic", "ignore": ["lm_head", "re:.*vision.*"]}]))
    assert "variants[1].ignore[1]" in message and "matches no module" in message


@pytest.mark.parametrize("pattern", ["lm_head", "re:.*down_proj", "model.layers.0.mlp.up_proj", "q_proj"])
def test_ignore_patterns_that_match_are_accepted(tmp_path, pattern):
    load_recipe(write(tmp_path, [{"name": "g", "kind": "w8a8_int8", "ignore": [pattern]}]))


def test_engine_that_cannot_load_the_scheme_is_refused(tmp_path):
    message = error(write(tmp_path, [{"name": "g", "kind": "w4a16_gptq", "engine": "llamacpp"}]))
    assert "'llamacpp' cannot serve compressed-tensors" in message and "vllm" in message


def test_missing_calibration_file(tmp_path):
    message = error(write(tmp_path, [{"name": "g", "kind": "w4a16_gptq"}], {"source": "file", "path": "nope.jsonl"}))
    assert "calibration.path" in message and "not found" in message


def test_empty_calibration_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    message = error(write(tmp_path, [{"name": "g", "kind": "w4a16_gptq"}], {"source": "file", "path": "empty.jsonl"}))
    assert "holds no text" in message


def test_more_samples_than_exist(tmp_path):
    (tmp_path / "cal.jsonl").write_text("".join(json.dumps({"text": f"sample {i} " * 20}) + "\n" for i in range(5)))
    message = error(write(tmp_path, [{"name": "g", "kind": "w4a16_awq"}],
                          {"source": "file", "path": "cal.jsonl", "samples": 6}))
    assert "calibration.samples: 6 asked" in message and "holds 5" in message
    load_recipe(write(tmp_path, [{"name": "g", "kind": "w4a16_awq"}], {"source": "file", "path": "cal.jsonl", "samples": 5}))


def test_fp8_needs_no_calibration_data(tmp_path):
    load_recipe(write(tmp_path, [{"name": "f", "kind": "fp8_dynamic"}], {"source": "file", "path": "nope.jsonl"}))


def test_builtin_calibration_is_deterministic_and_large_enough():
    texts = builtin_texts()
    assert len(texts) >= 256 and texts == builtin_texts()
    assert all(len(t) >= 200 for t in texts)


def test_more_builtin_samples_than_exist_are_refused_with_the_count(tmp_path):
    """The check counts only as far as the recipe asks (validate stays fast), and still names the total."""
    total = len(builtin_texts())
    assert [builtin_text_count(n) for n in (32, total, total + 5)] == [32, total, total]
    message = error(write(tmp_path, [{"name": "g", "kind": "w4a16_gptq"}], {"samples": total + 1}))
    assert f"calibration.samples: {total + 1} asked, but the builtin calibration data holds {total} samples" in message
    load_recipe(write(tmp_path, [{"name": "g", "kind": "w4a16_gptq"}], {"samples": total}))


def test_calibration_file_formats(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\n\nsecond paragraph\n")
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    assert file_texts(tmp_path / "a.txt") == ["first paragraph", "second paragraph"]
    assert file_texts(tmp_path / "d.jsonl", "body") == ["x"]
    assert file_texts(tmp_path) == ["first paragraph", "second paragraph"]


@pytest.mark.parametrize("section", ["divergence", "parity"])
@pytest.mark.parametrize("text, ok", [("stdlib:difflib", True), ("stdlib:no_such_module_here", False),
                                      ("stdlib:Bad Name", False), ("corpus.txt", True), ("missing.txt", False)])
def test_fixed_texts_must_exist_before_any_work(tmp_path, section, text, ok):
    (tmp_path / "corpus.txt").write_text("some text " * 100)
    path = write(tmp_path, [])
    data = yaml.safe_load(path.read_text())
    data[section] = {"text": text}
    path.write_text(yaml.safe_dump(data))
    if ok:
        assert text_file(getattr(load_recipe(path), section)).is_file()
    else:
        assert f"{section}.text" in error(path)


def test_divergence_window_must_fit_the_vllm_context(tmp_path):
    path = write(tmp_path, [{"name": "f", "kind": "fp8_dynamic"}])
    recipe = yaml.safe_load(path.read_text())
    recipe["engines"] = {"vllm": {"max_model_len": 512}}
    recipe["divergence"] = {"window_tokens": 512}
    path.write_text(yaml.safe_dump(recipe))
    message = error(path)
    assert "divergence.window_tokens: 512 does not fit the vllm server's context" in message
    assert "engines.vllm.max_model_len 512" in message
    recipe["divergence"] = {"window_tokens": 511}
    path.write_text(yaml.safe_dump(recipe))
    load_recipe(path)
