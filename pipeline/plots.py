"""Latency-vs-load charts (PNG): one per variant, and one across variants, with the SLO drawn in.

Each point is the SLO's percentile at one load level with its confidence interval; an interval with
no upper bound (too few requests) is drawn as an arrow up. matplotlib renders off-screen (Agg).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.recipe.traffic import SLO
from pipeline.report import Report, ReportRow

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


def pareto_chart(report: Report, out: Path) -> Path | None:
    """Quality vs cost: each variant's worst drop bound against its $/1M tokens (with the cost's
    interval), passing variants filled, the winner starred, the Pareto frontier joined."""
    rows = [row for row in report.rows if row.usd_per_1m_tokens is not None and row.worst_drop_bound() is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        cost = row.capacity.usd_per_1m_tokens if row.capacity else None
        low = cost.low if cost and cost.low is not None else row.usd_per_1m_tokens
        high = cost.high if cost and cost.high is not None else row.usd_per_1m_tokens
        x, y = row.usd_per_1m_tokens, row.worst_drop_bound()
        ax.errorbar([x], [y], xerr=[[x - low], [high - x]], fmt="none", ecolor="grey", capsize=3, linewidth=1)
        style = {"marker": "*", "s": 260, "color": "gold", "edgecolors": "black"} if row.promoted else (
            {"marker": "o", "s": 70, "color": "tab:green"} if row.passed else
            {"marker": "o", "s": 70, "facecolors": "none", "edgecolors": "tab:red"})
        ax.scatter([x], [y], zorder=3, **style)
        ax.annotate(row.variant, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    frontier = [report.row(name) for name in report.pareto_frontier()]
    ax.plot([r.usd_per_1m_tokens for r in frontier], [r.worst_drop_bound() for r in frontier], color="tab:blue",
            linestyle=":", linewidth=1, label="Pareto frontier")
    limits = {value for name, value in report.thresholds.items() if name.endswith(".max_drop")}
    if len(limits) == 1:
        ax.axhline(limits.pop(), color="red", linestyle="--", linewidth=1, label="largest allowed drop")
    ax.scatter([], [], marker="o", color="tab:green", label="passes")
    ax.scatter([], [], marker="o", facecolors="none", edgecolors="tab:red", label="fails")
    ax.scatter([], [], marker="*", s=160, color="gold", edgecolors="black", label="promoted")
    ax.set_xlabel("$ per 1M output tokens at the SLO load (bars: 95% interval)")
    ax.set_ylabel("worst task's drop, 95% upper bound")
    ax.set_title(f"{report.recipe}: quality vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
