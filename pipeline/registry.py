"""Registry operations for operators: which version is champion, since when and why, what it beat,
and a rollback to the version it replaced, recorded as a run of its own with its reason.

Read from the MLflow registry that `track.Tracker.register` writes: the champion alias, the
`previous` alias it keeps, the version's tags (variant, sha256, promoted_at) and the run it points
at, whose parent run holds the decision and whose siblings are the variants it was decided among.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from typing import Any

from pipeline.track import PREVIOUS_ALIAS, PROMOTED_AT


FIGURE_PREFIXES = ("quality.", "fidelity.", "load.", "cost.")


class RegistryError(Exception):
    """A model, alias or version that is not in the registry (the operator's error: exit 2)."""


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    version: str
    variant: str | None
    sha256: str | None
    promoted_at: str | None
    run_id: str | None
    figures: dict[str, str] = field(default_factory=dict)  # its key figures (model_card.key_figures)


@dataclass(frozen=True, kw_only=True)
class Status:
    model: str
    alias: str
    champion: VersionInfo
    previous: VersionInfo | None
    decision: str | None  # the reason the run that promoted it gave
    decided_among: dict[str, str] = field(default_factory=dict)  # variant -> verdict in that run
    rollbacks: list[str] = field(default_factory=list)  # the reasons given, newest first


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _version(client: Any, model: str, alias: str) -> VersionInfo | None:
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None
    figures = {k: v for k, v in sorted(found.tags.items()) if k.startswith(FIGURE_PREFIXES)}
    return VersionInfo(version=str(found.version), variant=found.tags.get("variant"), sha256=found.tags.get("sha256"),
                       promoted_at=found.tags.get(PROMOTED_AT), run_id=found.run_id, figures=figures)


def require_model(client: Any, model: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models())
        raise RegistryError(f"no registered model {model!r} in the tracking store {client.tracking_uri}"
                            f" (registered: {', '.join(known) or 'none'})") from None


def status(client: Any, model: str, alias: str = "champion") -> Status:
    """The alias's version now, the previous one, and the decision that put it there."""
    require_model(client, model)
    champion = _version(client, model, alias)
    if champion is None:
        raise RegistryError(f"{model} has no {alias!r} version yet: no run has promoted one")
    decision, among = None, {}
    if champion.run_id:
        run = client.get_run(champion.run_id)
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id:
            decision = client.get_run(parent_id).data.tags.get("decision")
            siblings = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
            among = {s.info.run_name: s.data.tags.get("verdict", "?") + (" (promoted)" if s.data.tags.get("promoted")
                                                                          == "true" else "")
                     for s in sorted(siblings, key=lambda s: s.info.run_name)}
    experiments = [e.experiment_id for e in client.search_experiments()]
    rollbacks = [r.data.tags.get("reason", "") for r in client.search_runs(
        experiments, f"tags.qg_kind = 'rollback' and tags.registered_model = '{model}'",
        order_by=["attributes.start_time DESC"])] if experiments else []
    return Status(model=model, alias=alias, champion=champion, previous=_version(client, model, PREVIOUS_ALIAS),
                  decision=decision, decided_among=among, rollbacks=rollbacks)


def rollback(client: Any, model: str, reason: str, alias: str = "champion") -> tuple[VersionInfo, VersionInfo, str]:
    """Make the `previous` version the alias's again (and the current one `previous`), recorded as a
    run tagged `qg_kind=rollback` with the reason. Returns (from, to, the run's id)."""
    if not reason.strip():
        raise RegistryError("--reason: say why (it is recorded with the rollback)")
    require_model(client, model)
    current, previous = _version(client, model, alias), _version(client, model, PREVIOUS_ALIAS)
    if current is None:
        raise RegistryError(f"{model} has no {alias!r} version: nothing to roll back")
    if previous is None:
        raise RegistryError(f"{model} has no {PREVIOUS_ALIAS!r} version: version {current.version} is the only"
                            f" {alias} it has had")
    client.set_registered_model_alias(model, alias, previous.version)
    client.set_registered_model_alias(model, PREVIOUS_ALIAS, current.version)
    client.set_model_version_tag(model, previous.version, PROMOTED_AT, now())
    experiment = client.get_run(current.run_id).info.experiment_id if current.run_id else "0"
    run = client.create_run(experiment, run_name=f"rollback-{model}-{time.strftime('%Y%m%d-%H%M%S')}",
                                    tags={"qg_kind": "rollback", "registered_model": model, "alias": alias,
                                          "from_version": current.version, "to_version": previous.version,
                                          "reason": reason[:5000]})
    client.set_terminated(run.info.run_id, "FINISHED")
    return current, _version(client, model, alias) or previous, run.info.run_id
