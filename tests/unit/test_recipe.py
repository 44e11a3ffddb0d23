"""Recipe validation: shipped recipes load, bad recipes fail naming file and field, and the CLI
turns every such failure into one message with exit code 2 and nothing written."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from pipeline.measure.tasks import available_evalsets
from pipeline.quantize.gguf import GGUF_TYPES
from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError
from pipeline.recipe.schema import LocalSource
from tests.unit.demo import demo_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("*.yaml")) + sorted((REPO / "benchmarks" / "recipes").glob("*.yaml"))
DEMO = demo_recipe()


def write_recipe(folder: Path, data: dict[str, Any], name: str = "bad.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def demo_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(DEMO)
    change(data)
    return data


def gguf_variants(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The demo's llama.cpp variants: what tests with a stand-in model file (no shapes to check) keep."""
    return [v for v in data["variants"] if v["kind"] == "gguf"]


def recipe_error(path: Path) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return str(info.value)


# --- shipped recipes -------------------------------------------------------------------------


def test_recipes_folder_has_the_demo_and_template():
    assert {p.name for p in RECIPES} >= {"demo.yaml", "template.yaml"}


def needs_task_lookup(path: Path) -> None:
    """A recipe with tasks named by path is checked against lm-eval's index, which lives in an
    engine environment: `make test` sets them up; a bare `make test-unit` may not have."""
    from pipeline.settings import Settings
    from pipeline.toolenv import tool_env

    tasks = yaml.safe_load(path.read_text())["evals"]["tasks"]
    if any(isinstance(t, dict) and "path" in t for t in tasks) and not any(
            tool_env(name, Settings().envs).version("lm_eval") for name in ("llamacpp", "vllm")):
        pytest.skip("no engine environment with lm-eval: run `make setup`")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_recipe_validates(path):
    needs_task_lookup(path)
    recipe = load_recipe(path)
    assert recipe.variants
    for engine in {v.engine for v in recipe.variants}:
        assert recipe.reference_for(engine).reference


def test_demo_model_resolves_to_the_packaged_gguf():
    needs_task_lookup(REPO / "recipes" / "demo.yaml")
    recipe = load_recipe(REPO / "recipes" / "demo.yaml")
    # package_file sources are looked up, not rewritten; the file must exist in the package.
    from pipeline.source import package_file

    found = package_file(recipe.model)
    assert found is not None and found.is_file() and found.suffix == ".gguf"


# --- bad input: load_recipe ------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = recipe_error(path)
    assert str(path) in message and "not found" in message


def test_malformed_yaml_points_at_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    # Line 3 opens a flow sequence that never closes: the parser stops on a later line.
    path.write_text("name: x\nmodel: {kind: hf, repo_id: a/b}\nvariants: [\n  - {name: f16\n")
    message = recipe_error(path)
    assert message.startswith(f"{path}:")
    where = message[len(str(path)) + 1:].split(":")
    assert where[0].isdigit() and where[1].isdigit(), message
    assert int(where[0]) >= 3
    assert "malformed YAML" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    message = recipe_error(path)
    assert str(path) in message and "mapping" in message


def test_unknown_top_level_key_suggests_and_lists(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d.update(varients=[])))
    message = recipe_error(path)
    assert str(path) in message
    assert "varients: unknown key" in message
    assert "Did you mean 'variants'?" in message
    for key in ("load", "evals", "gates", "hardware", "slo", "promotion", "tracking"):
        assert key in message.split("Allowed keys:")[1]


def test_unknown_nested_key_names_the_dotted_field(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["slo"].update(ttft_p95=500)))
    message = recipe_error(path)
    assert str(path) in message
    assert "slo.ttft_p95: unknown key" in message
    assert "Did you mean 'ttft_ms'?" in message
    allowed = message.split("Allowed keys:")[1]
    assert {k.strip() for k in allowed.split(",")} == {"e2e_ms", "itl_ms", "max_error_rate", "percentile", "tpot_ms",
                                                       "ttft_ms"}


def test_unknown_key_two_levels_down(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["engines"]["llamacpp"].update(thread=2)))
    message = recipe_error(path)
    assert "engines.llamacpp.thread: unknown key" in message
    assert "Did you mean 'threads'?" in message


@pytest.mark.parametrize("change, field, suggestion", [
    (lambda d: d["variants"][1].update(typ="Q8_0"), "variants[1].typ", "type"),
    (lambda d: d["model"].update(paht="x.gguf"), "model.paht", "path"),
], ids=["variant", "model"])
def test_unknown_key_inside_a_discriminated_section(tmp_path, change, field, suggestion):
    path = write_recipe(tmp_path, demo_with(change))
    message = recipe_error(path)
    assert f"{field}: unknown key" in message
    assert f"Did you mean '{suggestion}'?" in message


def test_wrong_type_shows_what_was_received(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["load"].update(requests_per_level="many")))
    message = recipe_error(path)
    assert str(path) in message
    assert "load.requests_per_level:" in message and "'many'" in message


def test_out_of_range_value_names_the_field(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["gates"].update(max_accuracy_drop=1.5)))
    assert "gates.max_accuracy_drop:" in recipe_error(path)


def test_missing_required_section(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d.pop("hardware")))
    message = recipe_error(path)
    assert "hardware: required field is missing" in message


def test_unknown_gguf_type_suggests_the_close_one(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"][3].update(type="Q2_KK")))
    message = recipe_error(path)
    assert str(path) in message
    assert "variants[3].type" in message and "'Q2_KK'" in message
    assert "Did you mean 'Q2_K'?" in message
    assert all(t in message for t in GGUF_TYPES)


@pytest.mark.parametrize("kind, path_value, expect", [
    ("local", "no_such_model_dir", "not a Hugging Face model directory"),
    ("gguf", "no_such_model.gguf", "not found"),
])
def test_nonexistent_model_path(tmp_path, kind, path_value, expect):
    path = write_recipe(tmp_path, demo_with(lambda d: d.update(model={"kind": kind, "path": path_value})))
    message = recipe_error(path)
    assert str(path) in message and "model.path" in message and path_value in message and expect in message


def test_local_dir_without_config_json_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.safetensors").write_bytes(b"x")
    path = write_recipe(tmp_path, demo_with(lambda d: d.update(model={"kind": "local", "path": "model"})))
    assert "config.json" in recipe_error(path)


def test_relative_model_path_resolves_against_the_recipe_folder(tmp_path, monkeypatch):
    recipe_dir = tmp_path / "project" / "recipes"
    model_dir = recipe_dir / "tiny-model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text('{"model_type": "llama"}')
    path = write_recipe(recipe_dir, demo_with(lambda d: d.update(model={"kind": "local", "path": "tiny-model"},
                                                                 variants=gguf_variants(d))))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # "tiny-model" does not exist relative to the cwd
    recipe = load_recipe(path)
    assert isinstance(recipe.model, LocalSource)
    assert recipe.model.path == model_dir.resolve()


def test_relative_model_path_is_not_resolved_against_the_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    (cwd / "tiny-model").mkdir(parents=True)
    (cwd / "tiny-model" / "config.json").write_text("{}")
    path = write_recipe(tmp_path / "recipes",
                        demo_with(lambda d: d.update(model={"kind": "local", "path": "tiny-model"})))
    monkeypatch.chdir(cwd)
    assert "model.path" in recipe_error(path)


def test_relative_gguf_path_resolves_against_the_recipe_folder(tmp_path, monkeypatch):
    recipe_dir = tmp_path / "recipes"
    recipe_dir.mkdir()
    (recipe_dir / "m.gguf").write_bytes(b"GGUF")
    path = write_recipe(recipe_dir, demo_with(lambda d: d.update(model={"kind": "gguf", "path": "m.gguf"},
                                                                 variants=gguf_variants(d))))
    monkeypatch.chdir(tmp_path)
    assert load_recipe(path).model.path == (recipe_dir / "m.gguf").resolve()


@pytest.mark.parametrize("change, named", [
    (lambda d: d["model"].update(package="no_such_package_qg"), "'no_such_package_qg'"),
    (lambda d: d["model"].update(path="missing-file.gguf"), "'missing-file.gguf'"),
], ids=["package", "file"])
def test_package_file_missing(tmp_path, change, named):
    path = write_recipe(tmp_path, demo_with(change))
    message = recipe_error(path)
    assert str(path) in message and "model.package" in message and named in message


def test_engine_that_cannot_serve_the_format(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"][1].update(engine="vllm")))
    message = recipe_error(path)
    assert str(path) in message
    assert "variants[1].engine" in message
    assert "'vllm' cannot serve gguf" in message
    assert "llamacpp" in message.split("cannot serve")[1]


def test_unknown_engine_name(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"][2].update(engine="llama.cpp")))
    message = recipe_error(path)
    assert "variants[2].engine" in message and "'llama.cpp'" in message
    assert "Did you mean 'llamacpp'?" in message
    assert "vllm" in message  # the allowed list


def test_no_reference(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"][0].update(reference=False)))
    message = recipe_error(path)
    assert "variants:" in message and "'llamacpp'" in message and "exactly one" in message and "found 0" in message


def test_two_references_on_one_engine(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"][2].update(reference=True)))
    message = recipe_error(path)
    assert "exactly one" in message and "found 2" in message
    assert "f16" in message and "q4_k_m" in message


def test_duplicate_variant_names(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"][2].update(name="q8_0")))
    message = recipe_error(path)
    assert "variants[2].name" in message and "'q8_0'" in message and "twice" in message


def test_unknown_eval_task_lists_the_available_ones(tmp_path, monkeypatch):
    """A name that is no bundled set goes to lm-eval's index (tests/integration/test_tasks.py asks the
    real one); here it knows nothing close, so the closest bundled set is suggested."""
    from pipeline.measure import tasks
    from pipeline.workers.messages import TaskInfo

    asked = []

    def registry_without_it(queries, engines, envs_root):
        asked.extend(q.task for q in queries)
        return [TaskInfo(index=q.index, error=f"unknown task {q.task!r} in lm-eval's task registry", kind="task",
                         spec="", include_path=None, cwd="", subtasks=[]) for q in queries]

    monkeypatch.setattr(tasks, "_lookup", registry_without_it)
    path = write_recipe(tmp_path, demo_with(lambda d: d["evals"].update(tasks=["agreemnt", "morphology"])))
    message = recipe_error(path)
    assert asked == ["agreemnt"]  # bundled sets are read here, never looked up
    assert "evals.tasks[0].task: unknown task 'agreemnt'" in message
    assert "Did you mean 'agreement'?" in message
    assert available_evalsets() and all(name in message for name in available_evalsets())


def test_every_error_is_reported_at_once(tmp_path):
    def two_mistakes(d):
        d["load"]["requests_per_level"] = "many"
        d["slo"]["ttft_p95"] = 1

    message = recipe_error(write_recipe(tmp_path, demo_with(two_mistakes)))
    assert "load.requests_per_level" in message and "slo.ttft_p95" in message


# --- bad input through the CLI ---------------------------------------------------------------

QUANTGATE = Path(sys.executable).with_name("quantgate")

CLI_CASES = {
    "unknown-nested-key": (lambda d: d["slo"].update(ttft_p95=500), "slo.ttft_p95"),
    "wrong-type": (lambda d: d["load"].update(requests_per_level="many"), "load.requests_per_level"),
    "gguf-type": (lambda d: d["variants"][3].update(type="Q2_KK"), "variants[3].type"),
    "local-path": (lambda d: d.update(model={"kind": "local", "path": "no_such_dir"}), "model.path"),
    "package": (lambda d: d["model"].update(package="no_such_package_qg"), "model.package"),
    "engine-format": (lambda d: d["variants"][1].update(engine="vllm"), "variants[1].engine"),
    "two-references": (lambda d: d["variants"][1].update(reference=True), "variants"),
}


def _quantgate(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(QUANTGATE)] if QUANTGATE.is_file() else [sys.executable, "-m", "pipeline.cli"]
    env = {**os.environ, "QUANTGATE_ARTIFACTS": str(cwd / "artifacts"), "COLUMNS": "400"}
    return subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_recipe_exits_2_without_traceback_or_writes(tmp_path, case, command):
    change, field = CLI_CASES[case]
    path = write_recipe(tmp_path / "recipes", demo_with(change), name=f"{case}.yaml")
    result = _quantgate([command, str(path)], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert f"{case}.yaml" in result.stderr and field in result.stderr
    assert not (tmp_path / "artifacts").exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == [Path("recipes"), path.relative_to(tmp_path)]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_missing_recipe_exits_2(tmp_path, command):
    result = _quantgate([command, "nope.yaml"], cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "artifacts").exists()


def test_cli_unknown_key_inside_a_variant_exits_2(tmp_path):
    path = write_recipe(tmp_path / "recipes", demo_with(lambda d: d["variants"][1].update(typ="Q8_0")))
    result = _quantgate(["validate", str(path)], cwd=tmp_path)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2 and "variants[1].typ" in result.stderr


def test_a_task_named_twice_points_at_the_second(tmp_path):
    path = write_recipe(tmp_path, demo_with(lambda d: d["evals"].update(tasks=["agreement", "morphology",
                                                                              {"task": "sentiment", "name": "agreement"}])))
    message = recipe_error(path)
    assert "evals.tasks[2]: 'agreement' is named twice; give one a `name`" in message


@pytest.mark.parametrize("value", ["[/x]", "[a-z0-9]", "[q6_k]"])
def test_cli_prints_recipe_values_as_text_not_markup(tmp_path, value):
    """rich markup in a value once crashed the error printer ([/x]) or ate it ([a-z0-9] printed as nothing)."""
    path = write_recipe(tmp_path / "recipes", demo_with(lambda d: d["variants"][3].update(type=value)))
    result = _quantgate(["validate", str(path)], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert f"'{value}'" in result.stderr


# --- no open doors: what a local model may ask of us --------------------------------------------


def local_model_recipe(tmp_path: Path, weights: dict[str, bytes], config: dict | None = None,
                       allow_pickle: bool | None = None) -> Path:
    import json

    model = tmp_path / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                                                   "intermediate_size": 128, "num_hidden_layers": 2,
                                                   "num_attention_heads": 4, **(config or {})}))
    for name, data in weights.items():
        (model / name).write_bytes(data)
    source = {"kind": "local", "path": str(model)}
    if allow_pickle is not None:
        source["allow_pickle"] = allow_pickle
    return write_recipe(tmp_path, demo_with(lambda d: (d.update(model=source),
                                                        d.update(variants=gguf_variants(d)))))


def test_a_model_with_pickle_weights_only_is_refused_unless_allowed(tmp_path):
    path = local_model_recipe(tmp_path / "a", {"pytorch_model.bin": b"\x80\x04pickle"})
    message = recipe_error(path)
    assert f"{path}: model.path:" in message and "pickle checkpoints only (pytorch_model.bin)" in message
    assert "model.allow_pickle: true" in message
    assert load_recipe(local_model_recipe(tmp_path / "b", {"pytorch_model.bin": b"x"}, allow_pickle=True))
    # safetensors beside a pickle: the safetensors are what is loaded
    assert load_recipe(local_model_recipe(tmp_path / "c", {"pytorch_model.bin": b"x", "model.safetensors": b"\0" * 8}))


def test_a_model_that_asks_to_run_its_own_code_is_refused(tmp_path):
    path = local_model_recipe(tmp_path, {"model.safetensors": b"\0" * 8},
                              config={"auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}})
    message = recipe_error(path)
    assert f"{path}: model.path:" in message and "auto_map (AutoModelForCausalLM)" in message
    assert "trust_remote_code stays off" in message


@pytest.mark.parametrize("field, value", [("tracking.experiment", "../../etc"), ("tracking.experiment", "a/b"),
                                          ("name", "../x"), ("model.repo_id", "../../x")])
def test_names_that_would_lead_outside_the_artifacts_are_refused(tmp_path, field, value):
    def change(data):
        section, key = field.split(".") if "." in field else (None, field)
        if section == "model":
            data["model"] = {"kind": "hf", key: value}
        elif section:
            data[section][key] = value
        else:
            data[key] = value
    message = recipe_error(write_recipe(tmp_path, demo_with(change)))
    assert field in message and "should match pattern" in message, message


@pytest.mark.parametrize("gguf_type", ["F16", "Q8_0"])
def test_an_importance_matrix_on_a_type_that_ignores_it_is_refused(tmp_path, gguf_type):
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"][1].update(type=gguf_type, imatrix=True)))
    message = recipe_error(path)
    assert "variants[1]" in message and f"imatrix: {gguf_type} does not use an importance matrix" in message
    assert "Q4_K_M" in message


@pytest.mark.parametrize("index, kv_cache, expected", [
    (1, "q3_k", "variants[1].kv_cache: unknown llamacpp KV cache type 'q3_k'."),
    (7, "q8_0", "variants[7].kv_cache: unknown vllm KV cache type 'q8_0'. Available: auto, fp8, fp8_e4m3, fp8_e5m2"),
    (0, "q8_0", "variants[0].kv_cache: a reference is served as the model is"),
], ids=["llamacpp-unknown", "vllm-llamacpp-type", "on-the-reference"])
def test_a_kv_cache_type_the_engine_lacks_or_on_a_reference_is_refused(tmp_path, index, kv_cache, expected):
    assert DEMO["variants"][7]["kind"] == "fp8_dynamic"  # a vLLM variant
    message = recipe_error(write_recipe(tmp_path, demo_with(lambda d: d["variants"][index].update(kv_cache=kv_cache))))
    assert expected in message, message


def test_a_kv_cache_variant_is_served_with_it_and_made_like_its_twin(tmp_path):
    """`kv_cache` changes the engine settings the variant is served with, not its quantization."""
    path = write_recipe(tmp_path, demo_with(lambda d: d["variants"].append(
        {"name": "q8_0-kv-q4_0", "kind": "gguf", "type": "Q8_0", "kv_cache": "q4_0"})), "kv.yaml")
    recipe = load_recipe(path)
    twin, kv = recipe.variants[1], recipe.variants[-1]
    assert kv.quantize_params() == twin.quantize_params()
    served = recipe.engine_config("llamacpp", kv)
    assert (served.cache_type_k, served.cache_type_v) == ("q4_0", "q4_0")
    assert recipe.engine_config("llamacpp", twin) == recipe.engine_config("llamacpp")
    assert recipe.capabilities("llamacpp").scorer.kv_cache is None
    assert kv.labels()["kv_cache"] == "q4_0" and twin.labels()["kv_cache"] == "engine setting"
