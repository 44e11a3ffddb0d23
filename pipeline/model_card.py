"""A model card per variant, from the run's report: what it is, how it was made, quality with its
bounds, fidelity, performance and cost with intervals, the verdict, and caveats. Markdown, logged to
the variant's MLflow run and written as the registry version's description when it is promoted;
its key figures also become the version's tags.
"""

from __future__ import annotations

from pipeline.measure.latency import Interval
from pipeline.report import Report, ReportRow


def _interval(value: Interval | None, digits: int, unit: str = "") -> str:
    if value is None:
        return "not measured"
    if value.low is None or value.high is None:
        return f"{value.estimate:.{digits}f}{unit} (no finite 95% interval from this sample)"
    return f"{value.estimate:.{digits}f}{unit} [95%: {value.low:.{digits}f}–{value.high:.{digits}f}]"


def card(report: Report, row: ReportRow) -> str:
    """The variant's card, in markdown."""
    reference = next((r.variant for r in report.rows if r.reference and r.engine == row.engine), None)
    scheme = " ".join(f"{k}={v}" for k, v in (row.quantization or {}).items()) or "not made"
    verdict = {"promoted": "PROMOTED", "pass": "passed", "skipped": "not evaluated", "fail": "failed"}[row.verdict]
    lines = [f"# {row.variant} ({report.recipe})", "",
             f"**Verdict: {verdict}.** Decision of the run: {report.decision}", "",
             "## What it is",
             f"- Quantization: {scheme}; served by {row.engine}"
             + (f" with a {row.kv_cache} KV cache" if row.kv_cache else "")
             + (" (the reference every other variant on this engine is compared with)" if row.reference else
                f"; compared with the reference {reference}" if reference else "; no reference on its engine"),
             f"- Size: {row.file_mb} MB, {row.bits_per_weight} bits per weight; artifact key {row.artifact_key}",
             f"- Made in {row.quantize_seconds} s (peak RSS {row.peak_rss_mb} MB); recipe {report.recipe_hash}", "",
             "## Quality", "",
             "| task | metric | score | Δ vs reference | 95% upper bound on the drop | right→wrong / wrong→right |",
             "|---|---|---|---|---|---|"]
    for task in report.tasks:
        score, delta, bound, flips = row.score.get(task), row.delta.get(task), row.delta_upper.get(task), \
            row.flips.get(task)
        lines.append(f"| {task} | {report.metrics.get(task, 'score')} | {number(score, 3)} | {number(delta, 3, True)} |"
                     f" {number(bound, 3, True)} | {f'{flips.right_to_wrong} / {flips.wrong_to_right}' if flips else '–'} |")
    lines.append("")
    div = row.divergence
    lines += ["## Fidelity",
              f"- KL(reference ‖ variant): mean {div.kld_mean:.4f}, p99 {div.kld_p99:.4f} nats/token over"
              f" {div.n_tokens} tokens; top-1 flips {div.flip_rate:.3f}; perplexity ratio {div.ppl_ratio:.3f}"
              f" ({div.method})" if div else "- Not measured", ""]
    capacity = row.capacity
    lines += ["## Performance and cost"]
    if capacity is None:
        lines.append("- Not measured")
    else:
        lines += [f"- SLO: {capacity.reason}",
                  f"- Output tokens/s per replica at the SLO load: {_interval(capacity.output_tokens_per_s, 1)}",
                  f"- Replicas for the target load: {_interval(capacity.replicas, 0)}",
                  f"- $ per 1M output tokens: {_interval(capacity.usd_per_1m_tokens, 4)}"]
    lines += ["", "## Verdict's reasons"] + [f"- {reason}" for reason in row.reasons or ["every check passed"]]
    caveats = [f"{task}: {why}" for task, why in row.uninformative.items()]
    if capacity and capacity.output_tokens_per_s and capacity.output_tokens_per_s.high is None:
        caveats.append("throughput could not be bounded above with this many requests")
    lines += ["", "## Caveats"] + [f"- {c}" for c in caveats or ["none recorded"]]
    return "\n".join(lines) + "\n"


def key_figures(report: Report, row: ReportRow) -> dict[str, str]:
    """The figures a registry version carries as tags: its quality bounds, fidelity and cost."""
    figures = {f"quality.{task}.drop_bound": f"{bound:.4f}" for task, bound in row.delta_upper.items()}
    if row.divergence:
        figures["fidelity.kld_mean"] = f"{row.divergence.kld_mean:.5f}"
        figures["fidelity.flip_rate"] = f"{row.divergence.flip_rate:.4f}"
    if row.capacity and row.capacity.slo_level:
        figures["load.slo_load"] = row.capacity.slo_level.label
    if row.capacity and row.capacity.usd_per_1m_tokens:
        figures["cost.usd_per_1m_tokens"] = f"{row.capacity.usd_per_1m_tokens.estimate:.4f}"
    return figures


def number(value: float | None, digits: int, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
