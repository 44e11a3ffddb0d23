"""What changed since the last run of the same recipe (by name): the model's content and revision,
tool versions, variants added or dropped, and verdicts that flipped. A reviewer reading one run
sees whether a different answer comes from a different model, different tools or different choices.

A run's facts are tags of its MLflow parent run (`facts.*`); its verdicts are its children's tags.
"""

from __future__ import annotations

from typing import Any

from pipeline.report import Report
from pipeline.variant import VariantResult

FACT = "facts."


def facts(revision: str | None, results: list[VariantResult]) -> dict[str, str]:
    """This run's facts, as parent-run tags: the source's sha256 and revision, and every tool version
    its artifacts, evals and load sweeps were made with."""
    out: dict[str, str] = {}
    if revision:
        out[f"{FACT}model_revision"] = revision
    for result in results:
        manifest = result.artifact.manifest if result.artifact else {}
        if source := manifest.get("source"):
            out[f"{FACT}model_sha256"] = source["sha256"]
        for tool, version in (manifest.get("tool_versions") or {}).items():
            out[f"{FACT}tool.{tool}"] = str(version)
        if result.evals and result.evals.lm_eval_version:
            out[f"{FACT}tool.lm-eval"] = result.evals.lm_eval_version
        if result.load:
            name, _, version = result.load.generator.partition("==")
            out[f"{FACT}tool.{name}"] = version
    return out


def previous_run(client: Any, experiment_id: str, recipe: str, current: str) -> Any | None:
    """The last complete parent run of this recipe before `current`, or None."""
    found = client.search_runs([experiment_id], f"tags.recipe_name = '{recipe}' and tags.qg_state = 'complete'",
                               order_by=["attributes.start_time DESC"], max_results=5)
    return next((run for run in found if run.info.run_id != current), None)


def verdicts(client: Any, run: Any) -> dict[str, str]:
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    return {child.info.run_name: child.data.tags.get("verdict", "?") for child in children}


def since(before_facts: dict[str, str], before_verdicts: dict[str, str], now_facts: dict[str, str],
          report: Report) -> list[str]:
    """One line per change; empty when nothing did."""
    lines = []
    for name in sorted(set(before_facts) | set(now_facts)):
        if not name.startswith(FACT):
            continue
        old, new = before_facts.get(name), now_facts.get(name)
        if old != new:
            what = name.removeprefix(FACT).removeprefix("tool.")
            short = (lambda v: v[:12] if v and name.endswith("sha256") else v or "none")
            lines.append(f"{what}: {short(old)} → {short(new)}")
    now_verdicts = {row.variant: "pass" if row.passed else row.verdict for row in report.rows}
    if added := sorted(set(now_verdicts) - set(before_verdicts)):
        lines.append(f"variants added: {', '.join(added)}")
    if dropped := sorted(set(before_verdicts) - set(now_verdicts)):
        lines.append(f"variants dropped: {', '.join(dropped)}")
    lines += [f"verdict flipped: {name} {before_verdicts[name]} → {verdict}" for name, verdict in now_verdicts.items()
              if name in before_verdicts and before_verdicts[name] != verdict]
    return lines
