"""The run's report for a person: the decision, every verdict's reasons, the quality-vs-cost Pareto
plot and the latency-vs-load charts, each variant's model card, and the thresholds that judged them.

One markdown text, written as `report.md` next to its images under `artifacts/reports/<run>/`, and
the same text as a self-contained `report.html` (images inlined) that a browser or MLflow's artifact
view opens without the folder; each model card also as `cards/<variant>.md`.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline import model_card, plots
from pipeline.artifacts import write_text
from pipeline.report import Report, ReportRow

PARETO = "quality-vs-cost.png"
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:0 3px}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}"""


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    images: list[Path]
    cards: list[Path]  # one model card per variant


def _cost(row: ReportRow) -> str:
    cost = row.capacity.usd_per_1m_tokens if row.capacity else None
    if cost is None:
        return "–"
    if cost.low is None or cost.high is None:
        return f"{cost.estimate:.4f}"
    return f"{cost.estimate:.4f} [{cost.low:.4f}–{cost.high:.4f}]"


def _verdict(row: ReportRow) -> str:
    return "PROMOTED" if row.promoted else "not evaluated" if row.verdict == "skipped" else row.verdict


def markdown(report: Report, run_name: str, images: dict[str, str]) -> str:
    """`images`: what each image shows -> its file name next to the report."""
    frontier = report.pareto_frontier()
    lines = [f"# {report.recipe}: run {run_name}", "",
             f"**Decision:** {report.decision}", "",
             f"Recipe hash `{report.recipe_hash}`"
             + (f"; MLflow parent run `{report.mlflow_parent_run}`" if report.mlflow_parent_run else "")
             + (f"; registry: {report.registry.note}" if report.registry else ""), "",
             "## Variants", "",
             "| variant | engine | quantization | verdict | worst drop bound | KLD mean | SLO load | $/1M tokens [95%] |"
             " size MB | Pareto |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report.rows:
        scheme = " ".join(f"{v}" for k, v in (row.quantization or {}).items() if k != "kind") or "–"
        slo = row.capacity.slo_level.label if row.capacity and row.capacity.slo_level else "–"
        lines.append(f"| {row.variant} | {row.engine} | {scheme} | {_verdict(row)} | {model_card.number(row.worst_drop_bound(), 3, True)}"
                     f" | {model_card.number(row.divergence.kld_mean if row.divergence else None, 4)} | {slo} | {_cost(row)}"
                     f" | {model_card.number(row.file_mb, 1)} | {'yes' if row.variant in frontier else ''} |")
    if report.tied:
        lines += ["", f"Tied with the winner on cost (within the intervals): {', '.join(report.tied)}."]
    if report.changes is not None:
        lines += ["", "## Since the last run", ""]
        if report.previous_run is None:
            lines.append("The first complete run of this recipe in its MLflow experiment.")
        else:
            lines += [f"Compared with `{report.previous_run}`:", ""]
            lines += [f"- {change}" for change in report.changes or ["nothing changed"]]
    for title, file_name in images.items():
        lines += ["", f"## {title}", "", f"![{title}]({file_name})"]
    if stopped := [(row.variant, task, why) for row in report.rows for task, why in row.stopped.items()]:
        lines += ["", "## Sequential evaluation", "", "Where each variant's task stopped, and why:", ""]
        lines += [f"- **{variant}** {task}: {why}" for variant, task, why in stopped]
    lines += ["", "## Every verdict's reasons", ""]
    for row in report.rows:
        lines.append(f"- **{row.variant}** ({_verdict(row)})")
        lines += [f"  - {reason}" for reason in row.reasons or ["every check passed"]]
    if report.thresholds:
        lines += ["", "## Thresholds", "", "| threshold | value |", "|---|---|"]
        lines += [f"| `{name}` | {value:g} |" for name, value in sorted(report.thresholds.items())]
    lines += ["", "## Model cards"]
    for row in report.rows:
        card = model_card.card(report, row)
        lines += [""] + [f"#{line}" if line.startswith("#") else line for line in card.splitlines()]
    return "\n".join(lines) + "\n"


def to_html(text: str, folder: Path, title: str) -> str:
    """The markdown as one HTML page, its images inlined (data URIs)."""
    from markdown_it import MarkdownIt  # rich's own dependency

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)

    def inline(match: re.Match[str]) -> str:
        path = folder / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"/:]+\.png)"', inline, body)
    body = re.sub(r"<td>(PROMOTED|pass)</td>", r'<td class="pass">\1</td>', body)
    body = body.replace("<td>fail</td>", '<td class="fail">fail</td>')
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n")


def write(report: Report, run_name: str, folder: Path, charts: dict[str, Path]) -> ReportFiles:
    """report.md and report.html in `folder` (the run's report folder, where `charts` already are)."""
    images: dict[str, str] = {}
    pareto = plots.pareto_chart(report, folder / PARETO)
    if pareto:
        images["Quality vs cost"] = pareto.name
    if "" in charts:
        images["Latency vs load, all variants"] = charts[""].name
    for row in report.rows:
        if row.variant in charts:
            images[f"Latency vs load: {row.variant}"] = charts[row.variant].name
    text = markdown(report, run_name, images)
    md_path, html_path = folder / "report.md", folder / "report.html"
    cards = []
    for row in report.rows:
        cards.append(folder / "cards" / f"{row.variant}.md")
        write_text(cards[-1], model_card.card(report, row))
    write_text(md_path, text)
    write_text(html_path, to_html(text, folder, f"{report.recipe}: run {run_name}"))
    return ReportFiles(md_path, html_path, [folder / name for name in images.values()], cards)
