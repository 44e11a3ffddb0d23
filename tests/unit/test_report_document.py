"""The report a person reads, from a real report (the demo's llama.cpp leg): the decision, each
variant's figures and verdict, every reason, the Pareto frontier, the thresholds, the model cards,
and an HTML page that carries its own images."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

from pipeline import report_document
from pipeline.report import Report

REPORT = replace(Report.load(Path(__file__).parent / "data" / "demo_report.json"),
                 thresholds={"gate.agreement.max_drop": 0.02, "gate.arc_easy.max_drop": 0.02, "slo.ttft_ms": 3000.0})


def test_the_pareto_frontier_keeps_only_variants_nothing_beats_on_both_cost_and_quality():
    costs = {row.variant: (row.usd_per_1m_tokens, row.worst_drop_bound()) for row in REPORT.rows}
    frontier = REPORT.pareto_frontier()
    for name in frontier:
        cost, drop = costs[name]
        assert not any(c <= cost and d < drop or c < cost and d <= drop for c, d in costs.values())
    for name in set(costs) - set(frontier):
        cost, drop = costs[name]
        assert any(c <= cost and d <= drop for other, (c, d) in costs.items() if other != name)
    assert frontier == ["q2_k", "f16"]  # q2_k is cheapest but worst; f16 beats q8_0 and q4_k_m on both


def test_the_markdown_report_holds_the_decision_every_row_reason_threshold_and_card(tmp_path):
    files = report_document.write(REPORT, "demo-run", tmp_path, {})
    text = files.markdown.read_text()
    assert text.startswith("# smollm2-135m-demo: run demo-run\n") and f"**Decision:** {REPORT.decision}" in text
    assert "| q8_0 | llamacpp | Q8_0 | pass | +0.013 | 0.0045 | 4 streams | 0.8002 [0.7101–0.9129] | 144.8 |  |" in text
    assert "| f16 | llamacpp | F16 | PROMOTED |" in text and "| q2_k | llamacpp | Q2_K | fail |" in text
    assert all(f"  - {reason}" in text for row in REPORT.rows for reason in row.reasons)
    assert "| `slo.ttft_ms` | 3000 |" in text
    assert "![Quality vs cost](quality-vs-cost.png)" in text and (tmp_path / "quality-vs-cost.png").is_file()
    assert [p.name for p in files.cards] == [f"{row.variant}.md" for row in REPORT.rows]
    assert files.cards[2].read_text().startswith("# q4_k_m (smollm2-135m-demo)")
    assert "\n## q4_k_m (smollm2-135m-demo)\n" in text and "\n### Quality\n" in text  # cards one level down


def test_the_html_page_inlines_its_images_and_marks_verdicts(tmp_path):
    chart = tmp_path / "load-all-variants.png"
    chart.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    files = report_document.write(REPORT, "demo-run", tmp_path, {"": chart})
    page = files.html.read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[1].split(",", 1)[1]) == chart.read_bytes()
    assert '<td class="pass">PROMOTED</td>' in page and page.count('<td class="fail">fail</td>') == 2
    assert "<table>" in page and "<h2>Every verdict's reasons</h2>" in page


def test_a_variant_the_search_left_out_is_shown_as_not_evaluated_with_why(tmp_path):
    why = "not evaluated (cheapest-first search): f16 passed at $0.7 and this variant's $0.9 lies wholly above it"
    rows = [replace(row, passed=False, skipped=why, reasons=[why]) if row.variant == "q8_0" else row
            for row in REPORT.rows]
    files = report_document.write(replace(REPORT, rows=rows), "demo-run", tmp_path, {})
    text = files.markdown.read_text()
    assert "| q8_0 | llamacpp | Q8_0 | not evaluated |" in text and f"- **q8_0** (not evaluated)\n  - {why}" in text
    assert "**Verdict: not evaluated.**" in files.cards[1].read_text()
    assert [row.verdict for row in rows] == ["promoted", "skipped", "fail", "fail"]
