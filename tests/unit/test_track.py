"""MLflow parent runs: opened at a run's start, resumed by the run that finishes an interrupted one
(its partial children replaced), complete only once everything is recorded; nothing secret kept.
A real MLflow store (sqlite in a temp folder); nothing here is mocked."""

from __future__ import annotations

import pytest

from pipeline import track


@pytest.fixture
def tracker(tmp_path):
    return track.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume-test", tmp_path / "mlflow-artifacts")


def children(tracker: track.Tracker, parent: str) -> list[str]:
    runs = tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return sorted(r.info.run_name for r in runs)


def test_an_interrupted_parent_run_is_resumed_and_completed_once(tracker):
    first, resumed = tracker.open_parent("demo-1", "h1", {"load.levels": "[1, 2]"}, {"recipe": "demo.yaml"})
    assert not resumed
    run = tracker.client.get_run(first)
    assert run.data.tags[track.STATE_TAG] == track.INCOMPLETE and run.data.params == {"load.levels": "[1, 2]"}
    assert run.info.run_name == "demo-1"

    with pytest.raises(ConnectionError):  # recording dies midway: one child made, then the store went away
        with tracker.parent_run(first):
            tracker.child_run("f16", {}, {"passed": 1.0}, {}, {})
            raise ConnectionError("tracking store went away")
    tracker.interrupted(first)
    assert children(tracker, first) == ["f16"]

    again, resumed = tracker.open_parent("demo-2", "h1", {"load.levels": "[1, 2]"}, {"recipe": "demo.yaml"})
    assert (again, resumed) == (first, True)
    assert tracker.client.get_run(first).info.status == "RUNNING"
    other, resumed_other = tracker.open_parent("other-1", "h2", {}, {})  # another recipe: its own parent
    assert other != first and not resumed_other
    with tracker.parent_run(first):
        tracker.child_run("f16", {}, {"passed": 1.0}, {}, {})
        tracker.child_run("q8_0", {}, {"passed": 0.0}, {}, {})
    assert children(tracker, first) == ["f16", "q8_0"]  # the partial child is gone, not doubled
    done = tracker.client.get_run(first)
    assert done.data.tags[track.STATE_TAG] == track.COMPLETE and done.info.status == "FINISHED"

    fresh, resumed = tracker.open_parent("demo-3", "h1", {}, {})  # a complete run is never reopened
    assert fresh != first and not resumed


def test_params_tags_and_files_keep_no_secret(tracker, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_plantedSECRET123")
    parent, _ = tracker.open_parent("s-1", "h3", {"tracking.uri": "http://qg:pa55w0rd@mlflow:5000",
                                                  "note": "token hf_plantedSECRET123"}, {"who": "hf_plantedSECRET123"})
    with tracker.parent_run(parent):
        child = tracker.child_run("f16", {"x": "hf_plantedSECRET123"}, {}, {"t": "hf_plantedSECRET123"}, {},
                                  texts={"model_card.md": "# f16\nmade with hf_plantedSECRET123\n"})
        tracker.log_parent(parent, {"decision": "hf_plantedSECRET123"}, {"report.json": {"k": "hf_plantedSECRET123"}})
    for run_id in (parent, child):
        data = tracker.client.get_run(run_id).data
        assert "hf_plantedSECRET123" not in repr(data.params) + repr(data.tags)
        assert "pa55w0rd" not in repr(data.params)
    assert tracker.client.get_run(parent).data.params["tracking.uri"] == "http://qg:***@mlflow:5000"
    local = tracker.client.download_artifacts(parent, "report.json")
    assert "hf_plantedSECRET123" not in open(local).read()
    card = tracker.client.download_artifacts(child, "model_card.md")
    assert open(card).read() == "# f16\nmade with ***\n"


def test_the_experiment_opens_as_model_training_in_mlflows_ui(tracker):
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags[track.EXPERIMENT_KIND] == "custom_model_development"
