"""Comparison-ready MLflow runs, from a real report (the demo's llama.cpp leg): every variant's numbers
under the same grouped names, the values the report's own, the thresholds as params."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline import mlflow_keys
from pipeline.quantize.gguf import GGUFVariant
from pipeline.quantize.llmcompressor import FP8DynamicVariant, W4A16AWQVariant, W4A16GPTQVariant, W8A8Int8Variant
from pipeline.quantize.passthrough import HFVariant
from pipeline.report import Report

REPORT = Report.load(Path(__file__).parent / "data" / "demo_report.json")
GROUPS = {"gate", "quality", "fidelity", "size", "quantize", "load", "cost"}


def test_every_variant_has_the_same_quality_and_fidelity_keys_with_the_reports_values():
    quantized = [row for row in REPORT.rows if not row.reference]
    named = [{k for k in mlflow_keys.metrics(row) if k.split("/")[0] in {"quality", "fidelity", "size"}} for row in quantized]
    assert len(named) == 3 and all(keys == named[0] for keys in named)
    row = REPORT.row("q4_k_m")
    metrics = mlflow_keys.metrics(row)
    assert {key.split("/")[0] for key in metrics} == GROUPS
    for task in REPORT.tasks:
        assert metrics[f"quality/{task}/score"] == row.score[task]
        assert metrics[f"quality/{task}/delta"] == row.delta[task]
        assert metrics[f"quality/{task}/drop_bound"] == row.delta_upper[task]
        assert metrics[f"quality/{task}/right_to_wrong"] == row.flips[task].right_to_wrong
    assert metrics["fidelity/kld_mean"] == row.divergence.kld_mean
    assert metrics["gate/passed"] == 0.0 and metrics["size/bits_per_weight"] == row.bits_per_weight


def test_load_and_cost_are_read_at_the_slo_load_with_their_intervals():
    row = REPORT.row("q8_0")
    metrics = mlflow_keys.metrics(row)
    slo = row.capacity.slo_level
    at_slo = next(level for level in row.load if level.level == slo.level)
    assert metrics["load/slo_load"] == slo.level and metrics["load/goodput_rps"] == slo.goodput_rps
    assert metrics["load/ttft_p95_ms"] == at_slo.latency_ms["ttft_ms"]["p95"].estimate
    cost = row.capacity.usd_per_1m_tokens
    assert (metrics["cost/usd_per_1m_tokens"], metrics["cost/usd_per_1m_tokens_low"],
            metrics["cost/usd_per_1m_tokens_high"]) == (cost.estimate, cost.low, cost.high)
    series = mlflow_keys.series(row)
    assert series["per_level/load_level"] == [level.level for level in row.load]
    assert series["per_level/ttft_p95_ms"] == [level.latency_ms["ttft_ms"]["p95"].estimate for level in row.load]


def test_a_variant_without_an_slo_load_has_no_load_figures_but_keeps_its_quality():
    row = REPORT.row("q2_k")  # within the SLO in the demo: as if no level had been
    row = replace(row, capacity=replace(row.capacity, slo_level=None, output_tokens_per_s=None,
                                        requests_per_s=None, replicas=None, usd_per_1m_tokens=None))
    metrics = mlflow_keys.metrics(row)
    assert not any(k.startswith("load/ttft") or k == "load/slo_load" or k.startswith("cost/usd") for k in metrics)
    assert all(f"quality/{task}/score" in metrics for task in REPORT.tasks)


def test_thresholds_and_gated_metrics_are_params_and_tags_name_the_method():
    report = replace(REPORT, thresholds={"gate.arc_easy.max_drop": 0.05, "gate.confidence": 0.95, "slo.ttft_ms": 3000.0})
    params = mlflow_keys.params(report)
    assert params["gate.arc_easy.max_drop"] == "0.05" and params["slo.ttft_ms"] == "3000"
    assert params["quality.inflection.metric"] == "exact_match"
    row = REPORT.row("q4_k_m")
    tags = mlflow_keys.tags(row, GGUFVariant(kind="gguf", name="q4_k_m", type="Q4_K_M").labels())
    assert tags["verdict"] == "fail" and tags["reasons"] == "; ".join(row.reasons)
    assert (tags["engine"], tags["method"], tags["scheme"], tags["weight_bits"]) == ("llamacpp", "llama.cpp", "Q4_K_M", "4")


def test_each_variant_kind_labels_its_method_scheme_and_bits():
    labels = [v.labels() for v in (
        GGUFVariant(kind="gguf", name="f16", type="F16", engine="llamacpp"),
        HFVariant(kind="hf", name="bf16", engine="vllm"),
        FP8DynamicVariant(kind="fp8_dynamic", name="fp8", engine="vllm"),
        W8A8Int8Variant(kind="w8a8_int8", name="w8a8", engine="vllm"),
        W4A16GPTQVariant(kind="w4a16_gptq", name="gptq", engine="vllm", group_size=128),
        W4A16AWQVariant(kind="w4a16_awq", name="awq", engine="vllm", group_size=None))]
    assert [(l["method"], l["scheme"], l["weight_bits"]) for l in labels] == [
        ("llama.cpp", "F16", "16"), ("none", "unquantized", "16"), ("round-to-nearest", "FP8_DYNAMIC", "8"),
        ("smoothquant+gptq", "W8A8", "8"), ("gptq", "W4A16 g128", "4"), ("awq", "W4A16 per-channel", "4")]
