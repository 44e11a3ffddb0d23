"""The seams: a quantization kind and an engine registered here, with no other edit, flow through
recipe validation, planning and the choice of each measurement's method; unknown names list the
known ones. (The fakes below only declare specs; no stage runs.)"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import pytest
import yaml
from pydantic import Field

from pipeline import specs
from pipeline.artifacts import content_key
from pipeline.measure import NotMeasurable, divergence, evals, parity
from pipeline.plan import make_plan, required_envs
from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError
from pipeline.recipe.schema import EngineConfig, VariantConfig
from pipeline.settings import Settings
from tests.unit.demo import stand_in_model


class Int3Variant(VariantConfig):
    """A made-up 3-bit scheme in a made-up format."""

    format: ClassVar[str] = "int3-blob"
    needs_calibration: ClassVar[bool] = False
    kind: Literal["int3"]
    group_size: int = Field(32, ge=8)


class Int3Quantizer:
    def key(self, variant, source):
        return content_key("quantize", source.key, variant.quantize_params())

    def quantize(self, variant, source, store, recipe_hash):
        raise AssertionError("planning never quantizes")


class Blobd(EngineConfig):
    context_field: ClassVar[str] = "max_len"
    speed_only: ClassVar[frozenset[str]] = frozenset({"threads"})
    max_len: int = 4096
    slots: int = 2
    threads: int = 1


def blobd_capabilities(config: Blobd) -> specs.Capabilities:
    return specs.Capabilities(max_context=config.max_len, concurrency=config.slots, served_prompt_logprobs=True,
                              top_logprobs=20)


INT3 = specs.QuantizerSpec(name="int3-maker", variant_models=(Int3Variant,), env="int3env",
                           make=lambda env, recipe: Int3Quantizer())
BLOBD = specs.EngineSpec(name="blobd", formats=frozenset({"int3-blob"}), env="blobdenv", config_model=Blobd,
                         capabilities=blobd_capabilities, make=lambda **kwargs: None,
                         build=lambda env: "blobd==1.0")


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return stand_in_model(tmp_path / "model")


def recipe_file(tmp_path: Path, variants: list[dict], **sections) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "model": {"kind": "local", "path": "model"}, "variants": variants,
        "evals": {"tasks": ["agreement"]}, "hardware": {"name": "x", "usd_per_hour": 1},
        "tracking": {"experiment": "x", "registered_model": "x"}, **sections}))
    return path


FAKE_VARIANTS = [{"name": "i3-ref", "kind": "int3", "group_size": 128, "reference": True},
                 {"name": "i3", "kind": "int3"}]


def test_unknown_kind_names_the_available_ones(tmp_path, model_dir):
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file(tmp_path, FAKE_VARIANTS))
    message = str(info.value)
    assert "variants[0].kind: unknown kind 'int3'" in message
    assert "Available:" in message and all(k in message for k in ("gguf", "hf", "w4a16_gptq", "fp8_dynamic"))


def test_a_registered_kind_and_engine_validate_with_no_other_edit(tmp_path, model_dir):
    with specs.registered(INT3, BLOBD):
        recipe = load_recipe(recipe_file(tmp_path, FAKE_VARIANTS, engines={"blobd": {"slots": 8}}))
        assert [v.engine for v in recipe.variants] == ["blobd", "blobd"]  # the one engine serving int3-blob
        assert recipe.variants[1].group_size == 32 and recipe.engines.blobd.slots == 8
        assert recipe.capabilities("blobd").concurrency == 8
        assert required_envs(recipe) == ["blobdenv", "guidellm", "int3env", "transformers"]
    with pytest.raises(RecipeError, match="unknown kind 'int3'"):  # unregistered again afterwards
        load_recipe(recipe_file(tmp_path, FAKE_VARIANTS))


def test_the_engines_format_and_context_are_checked_from_its_spec(tmp_path, model_dir):
    with specs.registered(INT3, BLOBD):
        gguf_on_blobd = FAKE_VARIANTS + [{"name": "q8", "kind": "gguf", "type": "Q8_0", "engine": "blobd"}]
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe_file(tmp_path, gguf_on_blobd))
        assert "variants[2].engine: 'blobd' cannot serve gguf variants (engines that can: llamacpp)" in str(info.value)
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe_file(tmp_path, FAKE_VARIANTS, engines={"blobd": {"max_len": 256}},
                                    divergence={"window_tokens": 512}))
        assert "does not fit the blobd server's context (engines.blobd.max_len 256)" in str(info.value)
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe_file(tmp_path, FAKE_VARIANTS, engines={"blobd": {"slot": 8}}))
        assert "engines.blobd.slot: unknown key. Did you mean 'slots'?" in str(info.value)


def test_a_format_two_engines_serve_needs_the_engine_named(tmp_path, model_dir):
    hf_too = specs.EngineSpec(name="blobd", formats=frozenset({"int3-blob", "hf"}), env="blobdenv",
                              config_model=Blobd, capabilities=blobd_capabilities, make=lambda **kwargs: None,
                         build=lambda env: "blobd==1.0")
    with specs.registered(INT3, hf_too):
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe_file(tmp_path, FAKE_VARIANTS + [{"name": "bf16", "kind": "hf", "reference": True}]))
        assert "variants[2]: engine: required, since 2 engines serve hf variants (blobd, vllm)" in str(info.value)


def test_the_plan_keys_a_registered_kind_and_engine(tmp_path, model_dir):
    settings = Settings(artifacts=tmp_path / "artifacts", envs=tmp_path / "envs")
    with specs.registered(INT3, BLOBD):
        plan = make_plan(load_recipe(recipe_file(tmp_path, FAKE_VARIANTS)), settings)
        threads = make_plan(load_recipe(recipe_file(tmp_path, FAKE_VARIANTS, engines={"blobd": {"threads": 4}})),
                            settings)
        slots = make_plan(load_recipe(recipe_file(tmp_path, FAKE_VARIANTS, engines={"blobd": {"slots": 4}})), settings)
    ref, i3 = plan.variants
    assert (ref.kind, ref.params) == ("int3", {"kind": "int3", "group_size": 128})
    assert len({ref.artifact_key, i3.artifact_key}) == 2 and not (i3.quantize_cached or i3.eval_cached)
    # a setting the engine declares speed-only changes the load benchmark, not what the model answers
    assert [v.artifact_key for v in threads.variants] == [ref.artifact_key, i3.artifact_key]
    assert [v.eval_key for v in threads.variants] == [ref.eval_key, i3.eval_key]
    assert threads.variants[1].load_key != i3.load_key
    # any other engine setting may change an answer: the evals are redone
    assert slots.variants[1].eval_key != i3.eval_key and slots.variants[1].artifact_key == i3.artifact_key


def test_each_measurement_chooses_its_method_from_the_capabilities():
    served_top20 = blobd_capabilities(Blobd())
    assert parity.method(served_top20) == "served"
    assert divergence.method(served_top20) == divergence.served_method(20) and divergence.needs_server(served_top20)
    assert evals.worker(served_top20) == evals.SERVED_WORKER

    scorer = specs.InProcessScorer(worker="some.scorer", threads=3)
    in_process = specs.Capabilities(max_context=512, concurrency=1, served_prompt_logprobs=False, scorer=scorer)
    assert parity.method(in_process) == "in-process scorer"
    assert divergence.method(in_process) == divergence.EXACT_METHOD and not divergence.needs_server(in_process)
    assert evals.worker(in_process) == "some.scorer"

    no_logits = specs.InProcessScorer(worker="some.scorer", threads=3, full_logits=False)
    scorer_only = specs.Capabilities(max_context=512, concurrency=1, served_prompt_logprobs=False, scorer=no_logits)
    with pytest.raises(NotMeasurable, match="neither full-vocabulary logits nor top-k"):
        divergence.method(scorer_only)
    text_only = specs.Capabilities(max_context=512, concurrency=1, served_prompt_logprobs=False)
    for choose in (parity.method, evals.worker):
        with pytest.raises(NotMeasurable):
            choose(text_only)


def test_the_built_in_specs_declare_what_the_demo_relies_on():
    assert {s.name: s.kinds() for s in specs.quantizers()} == {
        "gguf": ["gguf"], "llmcompressor": ["fp8_dynamic", "w8a8_int8", "w4a16_gptq", "w4a16_awq"],
        "passthrough": ["hf"], "import-gguf": ["gguf_file"]}
    llamacpp, vllm = specs.engine("llamacpp"), specs.engine("vllm")
    assert llamacpp.formats == {"gguf"} and vllm.formats == {"hf", "compressed-tensors"}
    llamacpp_caps = llamacpp.capabilities(llamacpp.config_model(scorer_threads=3, ctx_per_slot=512))
    assert llamacpp_caps.exact_logits() and llamacpp_caps.scorer.threads == 3 and llamacpp_caps.max_context == 512
    assert not llamacpp_caps.served_prompt_logprobs
    vllm_caps = vllm.capabilities(vllm.config_model(max_model_len=1024))
    assert vllm_caps.served_prompt_logprobs and vllm_caps.top_logprobs == 100 and vllm_caps.max_context == 1024


def test_unknown_engine_and_clashing_kinds_are_refused():
    with pytest.raises(specs.UnknownName, match="unknown engine 'vlm'. Did you mean 'vllm'"):
        specs.engine("vlm")
    with pytest.raises(specs.UnknownName, match="unknown variant kind 'int4'.*Available: "):
        specs.quantizer_for_kind("int4")
    twin = specs.QuantizerSpec(name="other", variant_models=(Int3Variant,), env=None, make=lambda env, r: None)
    with specs.registered(INT3):
        with pytest.raises(ValueError, match="'int3' is already made by quantizer 'int3-maker'"):
            specs.register_quantizer(twin)
