"""Task references looked up in lm-eval's real index (in the llama.cpp env), before any work: every
bad reference is refused with exit 2, naming the file and the field; a user's folder resolves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.measure import tasks
from pipeline.recipe.load import load_recipe
from pipeline.settings import Settings
from tests.integration.conftest import quantgate

pytestmark = pytest.mark.integration


def write(folder: Path, model: Path, task_refs: list) -> Path:
    path = folder / "tasks.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "model": {"kind": "local", "path": str(model)},
        "variants": [{"name": "f16", "kind": "gguf", "type": "F16", "reference": True}],
        "evals": {"tasks": task_refs}, "hardware": {"name": "x", "usd_per_hour": 1},
        "tracking": {"experiment": "x", "registered_model": "x"}}))
    return path


def test_bad_task_references_are_refused_before_any_work(tmp_path, tiny_model, user_tasks, llamacpp):
    path = write(tmp_path, tiny_model, [
        "gsm8kk",  # a typo of a registry task
        "gsm8k",  # a registry task whose data is on the hub: not reachable offline
        {"task": "agreement", "metric": "bleu"},  # a metric the bundled set does not produce
        {"path": str(user_tasks / "echo.yaml"), "filter": "strict-match"},  # a filter it does not have
        {"path": str(user_tasks), "task": "qg_lenght"},  # a typo inside the user's folder
    ])
    proc = quantgate("validate", str(path), artifacts=tmp_path / "artifacts", check=False)
    message = proc.stderr
    assert proc.returncode == 2 and "Traceback" not in message, message
    assert str(path) in message
    assert "evals.tasks[0].task: unknown task 'gsm8kk' in lm-eval's task registry. Did you mean 'gsm8k'" in message
    assert "evals.tasks[1]: gsm8k needs the Hugging Face hub" in message and "openai/gsm8k" in message
    assert "evals.tasks[2].metric: qg_agreement produces acc; 'bleu' is not one of them" in message
    assert "evals.tasks[3].filter: qg_echo has the filters none; 'strict-match' is not one of them" in message
    assert "evals.tasks[4].task: unknown task 'qg_lenght'" in message and "Did you mean 'qg_length'" in message
    assert not (tmp_path / "artifacts").exists()


def test_a_users_folder_resolves_to_local_tasks_with_their_metrics(tmp_path, tiny_model, user_tasks, llamacpp):
    recipe = load_recipe(write(tmp_path, tiny_model, [{"path": str(user_tasks), "task": "qg_length"},
                                                      {"path": str(user_tasks / "echo.yaml")}]))
    length, echo = tasks.resolve(recipe.evals, recipe.engines_used(), Settings().envs)
    assert (length.source, length.metric, length.output_type, length.info.cwd) == (
        "path", "acc", "multiple_choice", str(user_tasks))
    assert (echo.label, echo.metric, echo.filter, echo.output_type) == ("echo", "exact_match", "none",
                                                                       "generate_until")  # label: the file's stem
    assert [s.data for s in length.info.subtasks] == ["local"]
    before = length.fingerprint()
    data = user_tasks / "length.jsonl"
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[::-1]) + "\n")  # the same items in another order: another key
    try:
        assert length.fingerprint() != before
    finally:
        data.write_text("\n".join(lines) + "\n")


def test_a_chat_template_asked_of_a_model_without_one_is_refused(tmp_path, tiny_model, user_tasks, llamacpp):
    bare = tmp_path / "bare-model"
    bare.mkdir()
    for item in tiny_model.iterdir():
        if item.name not in ("chat_template.jinja",):
            (bare / item.name).symlink_to(item)
    config = json.loads((tiny_model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").unlink()
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(Exception) as info:
        load_recipe(write(tmp_path, bare, [{"path": str(user_tasks / "echo.yaml"), "apply_chat_template": True}]))
    assert "evals.tasks[0].apply_chat_template: the model has no chat template" in str(info.value)
    load_recipe(write(tmp_path, tiny_model, [{"path": str(user_tasks / "echo.yaml"), "apply_chat_template": True}]))


def test_a_group_is_gated_per_member_or_pooled_as_the_recipe_says(tmp_path, tiny_model, user_tasks, llamacpp):
    folder = tmp_path / "grouped"
    folder.mkdir()
    for item in user_tasks.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "both.yaml").write_text("group: qg_both\ntask: [qg_length, qg_echo]\n")
    # an inline member with include: lm-eval indexes it, then fails to build it mid-run
    (folder / "inline.yaml").write_text("group: qg_inline\ntask:\n  - {task: qg_again, include: length.yaml}\n")
    recipe = load_recipe(write(tmp_path, tiny_model, [
        {"path": str(folder), "task": "qg_lengths"},
        {"path": str(folder), "task": "qg_lengths", "name": "pooled", "gate": "aggregate"}]))
    members, pooled = tasks.resolve(recipe.evals, recipe.engines_used(), Settings().envs)
    assert members.info.kind == "group" and [s.name for s in members.info.subtasks] == ["qg_length", "qg_length_again"]
    assert members.gated_labels() == ["qg_lengths/qg_length", "qg_lengths/qg_length_again"]
    assert pooled.gated_labels() == ["pooled"]
    with pytest.raises(Exception) as info:  # a group mixing choice and generated answers has no one metric
        load_recipe(write(tmp_path, tiny_model, [{"path": str(folder), "task": "qg_both"}]))
    assert "evals.tasks[0]: qg_both mixes output types (generate_until, multiple_choice)" in str(info.value)
    with pytest.raises(Exception) as info:
        load_recipe(write(tmp_path, tiny_model, [{"path": str(folder), "task": "qg_inline"}]))
    assert "group qg_inline's inline task 'qg_again' uses include:" in str(info.value)


def test_a_task_by_path_is_looked_up_once_until_its_files_change(tmp_path, tiny_model, user_tasks, llamacpp,
                                                                 monkeypatch):
    """The engine env keeps what lm-eval said of a task folder (`quantgate validate` then needs no
    lm-eval process): the same files are answered from it; an edited YAML is looked up anew."""
    import shutil

    from pipeline.toolenv import ToolEnv

    folder = tmp_path / "mine"
    shutil.copytree(user_tasks, folder)
    recipe = load_recipe(write(tmp_path, tiny_model, [{"path": str(folder), "task": "qg_length"}]))  # looks up
    workers: list[str] = []
    real = ToolEnv.run_worker
    monkeypatch.setattr(ToolEnv, "run_worker", lambda self, module, *args, **kwargs:
                        workers.append(module) or real(self, module, *args, **kwargs))

    def resolved() -> tasks.ResolvedTask:
        tasks._infos.cache_clear()  # the per-process memo; the env's cache is what is tested
        task, = tasks.resolve(recipe.evals, recipe.engines_used(), Settings().envs)
        return task

    cached = resolved()
    assert workers == [] and (cached.metric, cached.info.cwd) == ("acc", str(folder))
    assert [s.name for s in cached.info.subtasks] == ["qg_length"] and cached.info.index == 0
    (folder / "length.yaml").write_text((folder / "length.yaml").read_text().replace(
        "  - metric: acc\n", "  - metric: acc\n  - metric: acc_norm\n"))
    edited = resolved()
    assert workers == ["pipeline.workers.lmeval_tasks"] and edited.info.subtasks[0].metrics == ["acc", "acc_norm"]
    resolved()
    assert len(workers) == 1  # the edited folder is cached in its turn
