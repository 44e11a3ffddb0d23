"""Plan: content keys depend on exactly what determines each stage's output, and cache state is read
from the store."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from pipeline.artifacts import RESULT_FILE, write_json
from pipeline.measure import evals, load
from pipeline.plan import Plan, make_plan
from pipeline.quantize import STAGE as VARIANTS_STAGE
from pipeline.recipe.load import load_recipe
from pipeline.settings import Settings
from tests.unit.demo import demo_recipe

REPO = Path(__file__).resolve().parents[2]
DEMO = demo_recipe()


@pytest.fixture
def settings(tmp_path) -> Settings:
    envs = tmp_path / "envs"
    (envs / "llamacpp" / "src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp").mkdir(parents=True)
    return Settings(artifacts=tmp_path / "artifacts", envs=envs)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({  # shapes the demo's group size (64) divides
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}))
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    return folder


@pytest.fixture
def plan_for(tmp_path, model_dir, settings) -> Callable[..., Plan]:
    counter = iter(range(1000))

    def make(change: Callable[[dict[str, Any]], None] = lambda d: None) -> Plan:
        data = copy.deepcopy(DEMO)
        data["model"] = {"kind": "local", "path": str(model_dir)}
        change(data)
        path = tmp_path / "recipes" / f"r{next(counter)}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return make_plan(load_recipe(path), settings)

    return make


def keys(plan: Plan, which: str) -> dict[str, str]:
    return {v.name: getattr(v, f"{which}_key") for v in plan.variants}


def test_plan_lists_every_variant_with_distinct_keys(plan_for):
    plan = plan_for()
    assert [v.name for v in plan.variants] == ["f16", "q8_0", "q4_k_m", "q2_k", "q4_k_m-imatrix", "q2_k-imatrix",
                                               "bf16", "fp8", "w8a8-int8", "w4a16-gptq", "w4a16-awq"]
    assert [v.reference for v in plan.variants] == [True] + [False] * 5 + [True] + [False] * 4
    assert [v.engine for v in plan.variants] == ["llamacpp"] * 6 + ["vllm"] * 5
    assert plan.variants[2].params == {"kind": "gguf", "type": "Q4_K_M"}
    assert plan.variants[4].params == {"kind": "gguf", "type": "Q4_K_M", "imatrix": True}
    for which in ("artifact", "eval", "load"):
        assert len(set(keys(plan, which).values())) == 11
    all_keys = [k for which in ("artifact", "eval", "load") for k in keys(plan, which).values()]
    assert len(set(all_keys)) == 33


def test_keys_are_deterministic(plan_for):
    assert plan_for() == plan_for()


def test_fresh_store_has_everything_to_do_but_a_local_source(plan_for):
    plan = plan_for()
    assert plan.source_cached  # a local directory is used in place
    assert not any(v.quantize_cached or v.eval_cached or v.load_cached for v in plan.variants)
    assert plan.work_left == 11


def test_changing_one_variant_type_changes_only_its_keys(plan_for):
    before = plan_for()
    after = plan_for(lambda d: d["variants"][2].update(type="Q4_K_S"))
    for which in ("artifact", "eval", "load"):
        old, new = keys(before, which), keys(after, which)
        assert old["q4_k_m"] != new["q4_k_m"], which
        assert {k: v for k, v in old.items() if k != "q4_k_m"} == {k: v for k, v in new.items() if k != "q4_k_m"}


def test_renaming_a_variant_keeps_its_keys(plan_for):
    before = plan_for()
    after = plan_for(lambda d: d["variants"][2].update(name="medium"))
    assert keys(after, "artifact")["medium"] == keys(before, "artifact")["q4_k_m"]
    assert keys(after, "eval")["medium"] == keys(before, "eval")["q4_k_m"]
    assert keys(after, "load")["medium"] == keys(before, "load")["q4_k_m"]


GGUF_NAMES = {"f16", "q8_0", "q4_k_m", "q2_k", "q4_k_m-imatrix", "q2_k-imatrix"}


@pytest.mark.parametrize("change", [lambda d: d["load"].update(requests_per_level=32),
                                    lambda d: d["load"].update(output_tokens=128)],
                         ids=["requests", "output_tokens"])
def test_workload_changes_load_keys_only(plan_for, change):
    before, after = plan_for(), plan_for(change)
    assert keys(after, "artifact") == keys(before, "artifact")
    assert keys(after, "eval") == keys(before, "eval")
    assert all(keys(after, "load")[name] != key for name, key in keys(before, "load").items())


def test_eval_limit_changes_eval_keys_only(plan_for):
    before, after = plan_for(), plan_for(lambda d: d["evals"].update(limit=50))
    assert keys(after, "artifact") == keys(before, "artifact")
    assert keys(after, "load") == keys(before, "load")
    assert all(keys(after, "eval")[n] != k for n, k in keys(before, "eval").items())


@pytest.mark.parametrize("change", [
    lambda d: d["gates"].update(max_accuracy_drop=0.05),
    lambda d: d["slo"].update(ttft_ms=500),
    lambda d: d["hardware"].update(usd_per_hour=2.0),
    lambda d: d["tracking"].update(experiment="elsewhere"),
], ids=["gates", "slo", "hardware", "tracking"])
def test_promotion_settings_change_no_stage_key(plan_for, change):
    before, after = plan_for(), plan_for(change)
    for which in ("artifact", "eval", "load"):
        assert keys(after, which) == keys(before, which)
    assert after.recipe_hash != before.recipe_hash  # but the run records a different recipe


def test_editing_the_model_changes_every_key(plan_for, model_dir):
    before = plan_for()
    (model_dir / "model.safetensors").write_bytes(b"\x01" + (model_dir / "model.safetensors").read_bytes()[1:])
    after = plan_for()
    assert after.source_key != before.source_key
    for which in ("artifact", "eval", "load"):
        assert not set(keys(after, which).values()) & set(keys(before, which).values()), which


def test_adding_a_file_to_the_model_dir_changes_the_source(plan_for, model_dir):
    before = plan_for()
    (model_dir / "tokenizer.json").write_text("{}")
    assert plan_for().source_key != before.source_key


def test_tool_version_changes_the_artifact_keys_of_that_tool(plan_for, settings):
    before = plan_for()
    src = settings.envs / "llamacpp" / "src"
    (src / "llama_cpp_python-0.3.36").rename(src / "llama_cpp_python-0.3.37")
    after = plan_for()
    assert after.source_key == before.source_key
    old, new = keys(before, "artifact"), keys(after, "artifact")
    assert all((old[n] != new[n]) == (n in GGUF_NAMES) for n in old)  # llm-compressor's are its own


def test_cached_artifact_flips_only_quantize_cached(plan_for, settings):
    before = plan_for()
    q8 = next(v for v in before.variants if v.name == "q8_0")
    write_json(settings.artifacts / VARIANTS_STAGE / q8.artifact_key / RESULT_FILE, {"variant": "q8_0"})
    after = plan_for()
    changed = {v.name: v for v in after.variants}
    assert changed["q8_0"].quantize_cached
    assert not changed["q8_0"].eval_cached and not changed["q8_0"].load_cached
    assert changed["q8_0"].artifact_key == q8.artifact_key
    others_before = [v for v in before.variants if v.name != "q8_0"]
    assert [v for v in after.variants if v.name != "q8_0"] == others_before
    assert after.work_left == before.work_left == 11  # q8_0 still has evals and load to do


def test_entry_without_result_json_is_not_cached(plan_for, settings):
    q8 = next(v for v in plan_for().variants if v.name == "q8_0")
    (settings.artifacts / VARIANTS_STAGE / q8.artifact_key).mkdir(parents=True)
    assert not next(v for v in plan_for().variants if v.name == "q8_0").quantize_cached


def test_work_left_counts_variants_with_anything_to_do(plan_for, settings):
    plan = plan_for()
    by_name = {v.name: v for v in plan.variants}
    done = by_name["f16"]
    for stage, key in ((VARIANTS_STAGE, done.artifact_key), (evals.STAGE, done.eval_key), (load.STAGE, done.load_key)):
        write_json(settings.artifacts / stage / key / RESULT_FILE, {})
    partly = by_name["q2_k"]  # measured but its artifact is gone: still work left
    for stage, key in ((evals.STAGE, partly.eval_key), (load.STAGE, partly.load_key)):
        write_json(settings.artifacts / stage / key / RESULT_FILE, {})
    after = plan_for()
    assert after.work_left == 10
    f16 = next(v for v in after.variants if v.name == "f16")
    assert f16.quantize_cached and f16.eval_cached and f16.load_cached


def test_a_run_requires_only_the_environments_its_variants_use(plan_for, tmp_path, model_dir):
    from pipeline.plan import required_envs

    def envs(keep: set[str]) -> list[str]:
        data = copy.deepcopy(DEMO)
        data["model"] = {"kind": "local", "path": str(model_dir)}
        data["variants"] = [v for v in data["variants"] if v["kind"] in keep]
        path = tmp_path / "recipes" / "envs.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return required_envs(load_recipe(path))

    assert envs({"gguf"}) == ["guidellm", "llamacpp", "transformers"]
    # no llama.cpp for vLLM alone
    assert envs({"hf", "w8a8_int8"}) == ["guidellm", "llmcompressor", "transformers", "vllm"]
    assert envs({"hf"}) == ["guidellm", "transformers", "vllm"]  # the unquantized reference needs no quantizer
