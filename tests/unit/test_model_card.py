"""Model cards from a real report (the demo's llama.cpp leg, kept as test data): every figure the
card shows is the report's own, and the verdict's reasons and caveats are all there."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import model_card
from pipeline.report import Report

REPORT = Report.load(Path(__file__).parent / "data" / "demo_report.json")


def test_a_failed_variant_card_shows_its_figures_and_every_reason():
    row = REPORT.row("q4_k_m")
    text = model_card.card(REPORT, row)
    assert text.startswith("# q4_k_m (smollm2-135m-demo)\n\n**Verdict: failed.**")
    assert "- Quantization: kind=gguf type=Q4_K_M; served by llamacpp; compared with the reference f16" in text
    assert f"- Size: {row.file_mb} MB, {row.bits_per_weight} bits per weight" in text
    flips = row.flips["inflection"]
    assert (f"| inflection | exact_match | {row.score['inflection']:.3f} | {row.delta['inflection']:+.3f} |"
            f" {row.delta_upper['inflection']:+.3f} | {flips.right_to_wrong} / {flips.wrong_to_right} |") in text
    assert f"mean {row.divergence.kld_mean:.4f}" in text and f"top-1 flips {row.divergence.flip_rate:.3f}" in text
    cost = row.capacity.usd_per_1m_tokens
    assert f"$ per 1M output tokens: {cost.estimate:.4f} [95%: {cost.low:.4f}–{cost.high:.4f}]" in text
    assert all(f"- {reason}" in text for reason in row.reasons) and len(row.reasons) == 3


def test_the_winner_card_says_promoted_and_the_reference_says_what_it_is():
    text = model_card.card(REPORT, REPORT.row("f16"))
    assert "**Verdict: PROMOTED.**" in text and "(the reference every other variant" in text
    assert "- every check passed" in text


@pytest.mark.parametrize("variant", [r.variant for r in REPORT.rows])
def test_key_figures_are_the_rows_own(variant):
    row = REPORT.row(variant)
    figures = model_card.key_figures(REPORT, row)
    assert {k.split(".")[1] for k in figures if k.startswith("quality.")} == set(row.delta_upper)
    assert float(figures["cost.usd_per_1m_tokens"]) == pytest.approx(row.capacity.usd_per_1m_tokens.estimate, abs=1e-4)
    assert figures["load.slo_load"] == row.capacity.slo_level.label
