"""Bad input: a corpus of malformed recipes (tests/unit/recipe_corpus/), each a mistake a user makes.

Every one must fail with one message that starts with the file's path and names the field (or, for
YAML that does not parse, the line and column), exit code 2 from the CLI, no traceback, and nothing
written. Each file holds the demo's shape, cut down to two llama.cpp variants and bundled tasks (no
model file, no lm-eval environment needed), with a comment on its first line saying what is wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import cli
from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError

CORPUS = Path(__file__).resolve().parent / "recipe_corpus"

# What every corpus file was made from: valid, so each file fails for its own mistake only.
BASE = """\
name: corpus-demo
model: {kind: hf, repo_id: HuggingFaceTB/SmolLM2-135M-Instruct}
variants:
  - {name: f16, kind: gguf, type: F16, reference: true}
  - {name: q8_0, kind: gguf, type: Q8_0}
engines:
  llamacpp: {threads: 1, parallel: 4, ctx_per_slot: 1024}
evals:
  tasks: [agreement, sentiment]
load:
  levels: [1, 2, 4]
  requests_per_level: 4
slo: {percentile: 95, ttft_ms: 3000}
gates: {max_accuracy_drop: 0.02}
hardware: {name: cpu-2core-vm, usd_per_hour: 0.10}
tracking: {experiment: quantgate-corpus, registered_model: smollm2-135m}
"""

# file -> (where, allowed): `where` is the field the message must name (":LINE:" right after the
# path for YAML that does not parse; "" for the file as a whole), `allowed` a fragment saying what
# is allowed or what is wrong.
CASES: dict[str, tuple[str, str]] = {
    # unknown keys, at every depth, with the close one suggested
    "top-level-key-typo.yaml": ("varients", "Did you mean 'variants'?"),
    "slo-key-typo.yaml": ("slo.ttft_p95", "Did you mean 'ttft_ms'?"),
    "engine-setting-typo.yaml": ("engines.llamacpp.thread", "Did you mean 'threads'?"),
    "variant-key-typo.yaml": ("variants[1].typ", "Did you mean 'type'?"),
    "llmcompressor-variant-key-typo.yaml": ("variants[3].group_sise", "Did you mean 'group_size'?"),
    "task-key-typo.yaml": ("evals.tasks[0].limt", "Did you mean 'limit'?"),
    # wrong types
    "wrong-type-int.yaml": ("load.requests_per_level", "valid integer"),
    "wrong-type-bool.yaml": ("variants[0].reference", "valid boolean"),
    "list-for-mapping.yaml": ("slo", "valid dictionary"),
    "null-for-mapping.yaml": ("hardware", "valid dictionary"),
    "variant-is-a-string.yaml": ("variants[1]", "valid dictionary"),
    # out of range
    "accuracy-drop-out-of-range.yaml": ("gates.max_accuracy_drop", "less than or equal to 1"),
    "negative-price.yaml": ("hardware.usd_per_hour", "greater than 0"),
    "slo-percentile-out-of-range.yaml": ("slo.percentile", "less than or equal to 99.9"),
    "huge-number.yaml": ("load.repeats", "less than or equal to 10"),
    "levels-unsorted.yaml": ("load", "levels: [4, 2, 1] must be increasing"),
    "levels-infinite.yaml": ("load", "positive and finite"),
    "token-lengths-not-bracketing.yaml": ("load.prompt_tokens", "must bracket the mean 128"),
    "arrivals-without-rate.yaml": ("load", "arrivals: applies to profile rate only"),
    # unknown names: kinds, engines, types
    "unknown-variant-kind.yaml": ("variants[1].kind", "Available: gguf"),
    "unknown-engine.yaml": ("variants[1].engine", "Did you mean 'llamacpp'?"),
    "engine-cannot-serve-format.yaml": ("variants[1].engine", "engines that can: llamacpp"),
    "unknown-gguf-type.yaml": ("variants[1].type", "Q4_K_M"),
    "unknown-model-kind.yaml": ("model.kind", "Available: hf, local, gguf, package_file"),
    "markup-in-value.yaml": ("variants[1].type", "unknown GGUF type '[/x]'"),
    # names: unique, and never a path
    "duplicate-variant-names.yaml": ("variants[1].name", "names must be unique"),
    "variant-name-with-slash.yaml": ("variants[1].name", "^[a-z0-9][a-z0-9_.-]*$"),
    "variant-name-path-escape.yaml": ("variants[1].name", "^[a-z0-9][a-z0-9_.-]*$"),
    "recipe-name-with-spaces.yaml": ("name", "^[a-z0-9][a-z0-9_.-]*$"),
    "tracking-alias-pattern.yaml": ("tracking.alias", "^[a-z][a-z0-9_-]*$"),
    # missing or empty
    "empty-variants.yaml": ("variants", "at least 1 item"),
    "no-reference.yaml": ("variants", "exactly one variant with reference: true"),
    "missing-section.yaml": ("hardware", "required field is missing"),
    "missing-model-field.yaml": ("model.repo_id", "required field is missing"),
    "calibration-file-without-path.yaml": ("calibration", "calibration.path is required when source is 'file'"),
    # cross-checks: tasks, tolerances, files
    "task-named-twice.yaml": ("evals.tasks[1]", "give one a `name`"),
    "tolerance-for-unknown-task.yaml": ("gates.task_tolerances", "not one of evals.tasks (agreement, sentiment)"),
    "task-file-missing.yaml": ("evals.tasks[1].path", "not found"),
    "prompts-file-missing.yaml": ("load.prompts_file", "not found"),
    "divergence-text-missing.yaml": ("divergence.text", "standard-library module"),
    "calibration-lines-not-objects.yaml": ("calibration.path", "not readable as calibration text"),
    "model-file-not-gguf.yaml": ("model.path", "not a GGUF file"),
    "model-path-too-long.yaml": ("model.path", "is not a usable path"),
    "package-not-installed.yaml": ("model.package", "'no_such_package_qg' is not installed"),
    # YAML that does not parse: the line and column
    "yaml-unclosed-bracket.yaml": (":13:", "malformed YAML"),
    "yaml-bad-indent.yaml": (":14:", "malformed YAML"),
    "yaml-tabs.yaml": (":13:1:", "malformed YAML: found character '\\t'"),
    "yaml-duplicate-key.yaml": (":16:1:", "'gates' is written twice"),
    "yaml-impossible-date.yaml": (":17:", "'2024-02-30' as timestamp: day is out of range"),
    "yaml-self-alias.yaml": ("evals.tasks[1].gen_kwargs.until", "refers to itself"),
    # not a recipe at all
    "top-level-list.yaml": ("", "a recipe is a YAML mapping (got list)"),
    "top-level-scalar.yaml": ("", "a recipe is a YAML mapping (got str)"),
    "empty-file.yaml": ("", "the recipe is empty"),
    "non-utf8.yaml": ("", "'utf-8' codec can't decode"),
}

# The real CLI (one process each, ~1 s) for one case of every path an error takes through the loader
# and the printer; every case goes through the CLI in-process below.
SUBPROCESS_CASES = [
    "top-level-key-typo.yaml", "llmcompressor-variant-key-typo.yaml", "wrong-type-int.yaml",
    "variant-is-a-string.yaml", "huge-number.yaml", "levels-infinite.yaml", "unknown-variant-kind.yaml",
    "engine-cannot-serve-format.yaml", "markup-in-value.yaml", "variant-name-path-escape.yaml", "empty-variants.yaml",
    "tolerance-for-unknown-task.yaml", "task-file-missing.yaml", "prompts-file-missing.yaml",
    "calibration-lines-not-objects.yaml", "model-file-not-gguf.yaml", "model-path-too-long.yaml",
    "yaml-tabs.yaml", "yaml-duplicate-key.yaml", "yaml-impossible-date.yaml", "yaml-self-alias.yaml",
    "top-level-scalar.yaml", "empty-file.yaml", "non-utf8.yaml",
]
# ... and `plan`, which would write to the artifacts folder, for a few.
PLAN_CASES = ["variant-name-path-escape.yaml", "prompts-file-missing.yaml", "model-file-not-gguf.yaml",
              "yaml-self-alias.yaml", "non-utf8.yaml"]


def corpus_files() -> set[str]:
    return {p.name for p in CORPUS.glob("*.yaml")}


def assert_names_file_and_field(message: str, path: Path, case: str) -> None:
    where, allowed = CASES[case]
    if where.startswith(":"):  # YAML that does not parse: line and column right after the path
        assert message.startswith(f"{path}{where}"), message
    else:
        assert message.startswith(f"{path}:"), message
        assert where in message, f"{where!r} not named in: {message}"
    assert allowed in message, f"{allowed!r} not in: {message}"


def snapshot(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


# --- the corpus itself ------------------------------------------------------------------------


def test_every_corpus_file_has_a_case_and_there_are_enough():
    assert corpus_files() == set(CASES)
    assert len(CASES) >= 32
    assert set(SUBPROCESS_CASES) <= set(CASES) and set(PLAN_CASES) <= set(CASES)


def test_the_corpus_base_is_a_valid_recipe(tmp_path):
    """Each corpus file is this with one mistake; it loads, so the mistake is what a case fails on."""
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    recipe = load_recipe(path, envs_root=tmp_path / "no-envs")
    assert [v.name for v in recipe.variants] == ["f16", "q8_0"]


# --- load_recipe ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_recipe_names_file_and_field(case, tmp_path):
    path = CORPUS / case
    with pytest.raises(RecipeError) as info:
        load_recipe(path, envs_root=tmp_path / "no-envs")  # no case gets as far as an lm-eval lookup
    assert_names_file_and_field(str(info.value), path, case)


def test_load_recipe_names_the_file_as_given(tmp_path, monkeypatch):
    """A relative path is named as the user wrote it."""
    monkeypatch.chdir(CORPUS.parent)
    with pytest.raises(RecipeError) as info:
        load_recipe(Path("recipe_corpus") / "unknown-gguf-type.yaml")
    assert str(info.value).startswith(f"{Path('recipe_corpus') / 'unknown-gguf-type.yaml'}: invalid recipe")


def test_a_recipe_path_the_os_refuses(tmp_path, monkeypatch):
    """A recipe argument too long for the OS once escaped load_recipe as OSError (a traceback)."""
    monkeypatch.setenv("QUANTGATE_ARTIFACTS", str(tmp_path / "artifacts"))
    path = tmp_path / ("r" * 300 + ".yaml")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: cannot read recipe")
    result = CliRunner().invoke(cli.app, ["validate", str(path)])
    assert result.exit_code == 2 and str(path) in result.stderr, (result.exception, result.output)
    assert list(tmp_path.iterdir()) == []


def test_validate_without_engine_environment_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTGATE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("QUANTGATE_ENVS", str(tmp_path / "no-envs"))  # nothing to look lm-eval tasks up with
    path = tmp_path / "registry-task.yaml"
    path.write_text(BASE.replace("tasks: [agreement, sentiment]", "tasks: [agreement, hellaswag]"))
    result = CliRunner().invoke(cli.app, ["validate", str(path)])
    assert result.exit_code == 2, (result.exception, result.output)
    assert str(path) in result.stderr and "make setup" in result.stderr


def test_an_infinite_level_is_named_as_load_levels():
    with pytest.raises(RecipeError) as info:
        load_recipe(CORPUS / "levels-infinite.yaml")
    assert "load.levels" in str(info.value) or "load: levels:" in str(info.value)


# --- the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_validate_in_process(case, tmp_path, monkeypatch):
    """`quantgate validate` as the CLI module runs it: exit 2, the message, no exception escaping."""
    monkeypatch.setenv("QUANTGATE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("QUANTGATE_ENVS", str(tmp_path / "no-envs"))
    path = CORPUS / case
    result = CliRunner().invoke(cli.app, ["validate", str(path)])
    assert result.exit_code == 2, (result.exception, result.output)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert_names_file_and_field(result.stderr.removeprefix("error: ").rstrip("\n"), path, case)
    assert not (tmp_path / "artifacts").exists()


def quantgate(args: list[str], cwd: Path, artifacts: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI, in its own process (as tests/unit/test_recipe.py runs it)."""
    env = {**os.environ, "QUANTGATE_ARTIFACTS": str(artifacts), "QUANTGATE_ENVS": str(cwd / "no-envs"),
           "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_cli_validate_exits_2_without_traceback(case, tmp_path):
    path = CORPUS / case
    before = snapshot(CORPUS)
    result = quantgate(["validate", str(path)], cwd=tmp_path, artifacts=tmp_path / "artifacts")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    where, allowed = CASES[case]
    assert str(path) in result.stderr and where in result.stderr and allowed in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1
    assert list(tmp_path.iterdir()) == []  # no artifacts folder, nothing else
    assert snapshot(CORPUS) == before


@pytest.mark.parametrize("case", PLAN_CASES)
def test_cli_plan_exits_2_and_writes_nothing(case, tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    path = CORPUS / case
    result = quantgate(["plan", str(path)], cwd=tmp_path, artifacts=artifacts)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert str(path) in result.stderr and CASES[case][0] in result.stderr
    assert list(artifacts.rglob("*")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]
