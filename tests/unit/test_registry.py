"""Registry operations on a real MLflow store (sqlite in a temp folder): status says which version is
champion, since when, why and among what; rollback brings the previous one back, recorded as a run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import cli, registry, track


def promote(tracker: track.Tracker, tmp_path, run_name: str, winner: str, others: dict[str, str], sha: str,
            kv_cache: str | None = None) -> str:
    """What `quantgate run` records: a parent with the decision, a child per variant, the winner registered."""
    parent, _ = tracker.open_parent(run_name, run_name, {}, {})
    with tracker.parent_run(parent):
        children = {name: tracker.child_run(name, {}, {}, {"verdict": verdict, "promoted": str(name == winner).lower()},
                                            {}) for name, verdict in {winner: "pass", **others}.items()}
        model_file = tmp_path / f"{winner}.gguf"
        model_file.write_bytes(sha.encode())
        tracker.register("demo", "champion", children[winner], model_file,
                         {"variant": winner, "sha256": sha * 8, "key": sha, "format": "gguf", "bits_per_weight": 8},
                         f"# {winner}\nits card", {"cost.usd_per_1m_tokens": "0.79", "quality.arc.drop_bound": "0.01"},
                         winner, kv_cache)
        tracker.log_parent(parent, {"decision": f"{winner} is the cheapest passing variant"}, {})
    return children[winner]


@pytest.fixture(scope="module")
def two_promotions(tmp_path_factory) -> Path:
    """A store where f16 was promoted, then q8_0 (made once: an MLflow store takes seconds to create)."""
    folder = tmp_path_factory.mktemp("registry")
    tracker = track.Tracker(f"sqlite:///{folder / 'mlflow.db'}", "registry-test", folder / "mlflow-artifacts")
    promote(tracker, folder, "run-1", "f16", {"q4_k_m": "fail"}, "aaaa")
    promote(tracker, folder, "run-2", "q8_0", {"f16": "pass", "q4_k_m": "fail"}, "bbbb")
    return folder / "mlflow.db"


@pytest.fixture
def store(two_promotions, tmp_path):
    """A copy of it for each test."""
    shutil.copy(two_promotions, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, track.Tracker(uri, "registry-test", tmp_path / "mlflow-artifacts")


def test_status_names_the_champion_why_among_what_and_the_previous(store):
    uri, tracker = store
    now = registry.status(tracker.client, "demo")
    assert (now.champion.version, now.champion.variant) == ("2", "q8_0") and now.champion.promoted_at
    assert now.decision == "q8_0 is the cheapest passing variant"
    assert now.decided_among == {"f16": "pass", "q4_k_m": "fail", "q8_0": "pass (promoted)"}
    assert (now.previous.version, now.previous.variant) == ("1", "f16") and now.rollbacks == []
    assert now.champion.figures == {"cost.usd_per_1m_tokens": "0.79", "quality.arc.drop_bound": "0.01"}
    assert tracker.client.get_model_version("demo", "2").description == "# q8_0\nits card"


def test_rollback_brings_the_previous_back_and_is_recorded(store):
    uri, tracker = store
    before, after, run_id = registry.rollback(tracker.client, "demo", "q8_0 answers wrong on our support tickets")
    assert (before.version, after.version) == ("2", "1")
    now = registry.status(tracker.client, "demo")
    assert (now.champion.version, now.previous.version) == ("1", "2")
    assert now.decision == "f16 is the cheapest passing variant"  # the run that promoted version 1
    assert now.rollbacks == ["q8_0 answers wrong on our support tickets"]
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["from_version"] == "2" and run.data.tags["to_version"] == "1"


def test_the_cli_status_and_rollback(store, monkeypatch, tmp_path):
    uri, _ = store
    monkeypatch.setenv("QUANTGATE_ARTIFACTS", str(tmp_path / "artifacts"))
    runner = CliRunner()
    shown = runner.invoke(cli.app, ["status", "demo", "--tracking-uri", uri])
    assert shown.exit_code == 0, shown.output
    assert "demo: champion is version 2 (q8_0, sha256 bbbbbbbbbbbb), since 20" in shown.output
    assert "previous: version 1 (f16)" in shown.output and "chosen among: f16 pass, q4_k_m fail" in shown.output
    assert "figures: cost.usd_per_1m_tokens 0.79, quality.arc.drop_bound 0.01" in shown.output
    rolled = runner.invoke(cli.app, ["rollback", "demo", "--reason", "bad answers", "--tracking-uri", uri])
    assert rolled.exit_code == 0, rolled.output
    assert "demo: champion is version 1 (f16) again; version 2 (q8_0) is now 'previous'" in rolled.output
    shown = runner.invoke(cli.app, ["status", "demo", "--tracking-uri", uri])
    assert "champion is version 1 (f16" in shown.output and "rolled back before: bad answers" in shown.output


@pytest.mark.parametrize("args, said", [
    (["status", "nope"], "no registered model 'nope' in the tracking store"),
    (["rollback", "nope", "--reason", "x"], "(registered: demo)"),
    (["rollback", "demo", "--reason", " "], "--reason: say why"),
])
def test_operator_errors_exit_2_with_one_line(store, args, said):
    uri, _ = store
    result = CliRunner().invoke(cli.app, [*args, "--tracking-uri", uri])
    assert result.exit_code == 2 and said in result.stderr and "Traceback" not in result.output + result.stderr


def test_a_rollback_with_nothing_to_go_back_to_is_refused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = track.Tracker(uri, "registry-test", tmp_path / "mlflow-artifacts")
    promote(tracker, tmp_path, "run-1", "f16", {}, "aaaa")
    with pytest.raises(registry.RegistryError, match="no 'previous' version: version 1 is the only champion"):
        registry.rollback(tracker.client, "demo", "why not")


def test_a_winner_whose_artifact_is_already_champion_says_which_version_holds_it(store, tmp_path):
    """MLflow links a version to the run that registered it; a later run with the same winner adds no
    version, and its winner's run names the version instead (else its page says "Registered models: None")."""
    uri, tracker = store
    again = promote(tracker, tmp_path, "run-3", "q8_0", {"f16": "pass"}, "bbbb")
    assert sorted(str(v.version) for v in tracker.client.search_model_versions("name = 'demo'")) == ["1", "2"]
    assert tracker.client.get_run(again).data.tags[track.REGISTERED_TAG] == "demo/2"
    first = tracker.client.get_model_version("demo", "2").run_id
    assert first != again and tracker.client.get_run(first).data.tags[track.REGISTERED_TAG] == "demo/2"


def test_the_champions_weights_served_with_another_kv_cache_are_a_new_version(store, tmp_path):
    """A KV-cache variant shares its twin's file but not its numbers: registering it makes a version
    whose tags say the cache type `quantgate serve` must run it with."""
    uri, tracker = store
    promote(tracker, tmp_path, "run-3", "q8_0-kv-q8_0", {"q8_0": "pass"}, "bbbb", kv_cache="q8_0")
    version = tracker.client.get_model_version_by_alias("demo", "champion")
    assert str(version.version) == "3"
    assert version.tags["kv_cache"] == "q8_0" and version.tags["variant"] == "q8_0-kv-q8_0"
    assert tracker.client.get_model_version("demo", "2").tags["kv_cache"] == "engine setting"


def test_serve_runs_a_kv_cache_champion_with_its_cache(tmp_path):
    """`quantgate serve` rebuilds the engine section the version was measured with, its variant's
    KV cache type included."""
    from pipeline import serve
    from pipeline.artifacts import Store

    tracker = track.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "registry-test", tmp_path / "mlflow-artifacts")
    parent, _ = tracker.open_parent("run-1", "run-1", {}, {})
    with tracker.parent_run(parent):
        child = tracker.child_run("f16-kv-q8_0", {}, {}, {"engine": "llamacpp"}, {})
        model_file = tmp_path / "model.gguf"
        model_file.write_bytes(b"GGUF weights")
        tracker.register("demo", "champion", child, model_file, {"variant": "f16", "sha256": "cc" * 32, "key": "k1",
                                                                 "format": "gguf", "file": "model.gguf"},
                         "# card", {}, "f16-kv-q8_0", "q8_0")
        tracker.log_parent(parent, {}, {"recipe.yaml": "engines:\n  llamacpp: {parallel: 2}\n"})
    plan = serve.resolve(tracker.client, "demo", Store(tmp_path / "artifacts"))
    assert (plan.config.cache_type_k, plan.config.cache_type_v, plan.config.parallel) == ("q8_0", "q8_0", 2)
