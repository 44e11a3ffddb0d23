"""Latency-vs-load charts (PNG): one per variant, and one across variants, with the SLO drawn in.

Each point is the SLO's percentile at one load level with its confidence interval; an interval with
no upper bound (too few requests) is drawn as an arrow up. matplotlib renders off-screen (Agg).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.recipe.traffic import SLO
from pipeline.report import ReportRow

PANELS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "end-to-end"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # imported lazily: validation and planning never pay for it

    return plt


def _points(row: ReportRow, metric: str, name: str) -> tuple[list[float], list[float], list[float], list[float]]:
    xs, ys, below, above = [], [], [], []
    for level in row.load:
        interval = level.latency_ms.get(metric, {}).get(name)
        if interval is None:
            continue
        xs.append(level.level)
        ys.append(interval.estimate)
        below.append(interval.estimate - interval.low if interval.low is not None else 0.0)
        above.append(interval.high - interval.estimate if interval.high is not None else float("nan"))
    return xs, ys, below, above


def _draw(ax, row: ReportRow, metric: str, name: str, label: str) -> None:
    xs, ys, below, above = _points(row, metric, name)
    if not xs:
        return
    bounded = [a if a == a else 0.0 for a in above]
    line = ax.errorbar(xs, ys, yerr=[below, bounded], marker="o", capsize=3, label=label)
    for x, y, a in zip(xs, ys, above):
        if a != a:  # no upper bound with this many requests
            ax.annotate("", xy=(x, y * 1.25), xytext=(x, y), arrowprops={"arrowstyle": "->",
                                                                         "color": line[0].get_color()})
            ax.update_datalim([(x, y * 1.25)])  # keep the arrow inside the axes
    ax.autoscale_view()


def _finish(ax, title: str, limit: float | None, xlabel: str) -> None:
    if limit is not None:
        ax.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"SLO {limit:g} ms")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)


def variant_chart(row: ReportRow, slo: SLO, xlabel: str, out: Path) -> Path | None:
    """The variant's latency at the SLO percentile per load level, and its throughput."""
    if not row.load:
        return None
    plt = _pyplot()
    name = f"p{slo.percentile:g}"
    fig, axes = plt.subplots(1, len(PANELS) + 1, figsize=(16, 4))
    for ax, (metric, title) in zip(axes, PANELS):
        _draw(ax, row, metric, name, name)
        _finish(ax, f"{title} ({name})", slo.limits().get(metric), xlabel)
    ax = axes[-1]
    ax.errorbar([lv.level for lv in row.load], [lv.output_tokens_per_s.estimate for lv in row.load],
                yerr=[[lv.output_tokens_per_s.estimate - (lv.output_tokens_per_s.low or 0) for lv in row.load],
                      [(lv.output_tokens_per_s.high or lv.output_tokens_per_s.estimate)
                       - lv.output_tokens_per_s.estimate for lv in row.load]], marker="o", capsize=3)
    ax.set_title("output tokens/s")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    fig.suptitle(f"{row.variant}: latency vs load")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def comparison_chart(rows: list[ReportRow], slo: SLO, xlabel: str, out: Path) -> Path | None:
    """Every variant's latency at the SLO percentile per load level, one line each."""
    measured = [row for row in rows if row.load]
    if not measured:
        return None
    plt = _pyplot()
    name = f"p{slo.percentile:g}"
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.5))
    for ax, (metric, title) in zip(axes, PANELS):
        for row in measured:
            _draw(ax, row, metric, name, row.variant)
        _finish(ax, f"{title} ({name})", slo.limits().get(metric), xlabel)
    axes[0].legend(fontsize=8)
    fig.suptitle("latency vs load, all variants")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
