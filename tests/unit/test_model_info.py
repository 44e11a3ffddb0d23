"""Module names and widths read from a checkpoint's own tensors (safetensors headers), so ignore
patterns are checked against what any architecture really has, not Llama's names."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from pipeline import model_info
from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError

HIDDEN, FFN, VOCAB = 64, 128, 100


def checkpoint(folder: Path, architecture: str, tensors: dict[str, list[int]], tied: bool, shards: int = 1) -> Path:
    """A model folder whose safetensors files hold real headers (the tensors' bytes are not needed)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": [architecture], "hidden_size": HIDDEN, "intermediate_size": FFN, "num_hidden_layers": 2,
        "num_attention_heads": 4, "tie_word_embeddings": tied}))
    names = list(tensors)
    for shard in range(shards):
        header = {name: {"dtype": "BF16", "shape": tensors[name], "data_offsets": [0, 0]}
                  for name in names[shard::shards]}
        raw = json.dumps(header).encode()
        (folder / f"model-{shard:05d}-of-{shards:05d}.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    return folder


def layers(names: dict[str, list[int]]) -> dict[str, list[int]]:
    return {name.format(i=i): shape for i in range(2) for name, shape in names.items()}


GPT_NEOX = {"gpt_neox.embed_in.weight": [VOCAB, HIDDEN], "embed_out.weight": [VOCAB, HIDDEN],
            "gpt_neox.final_layer_norm.weight": [HIDDEN],
            **layers({"gpt_neox.layers.{i}.attention.query_key_value.weight": [3 * HIDDEN, HIDDEN],
                      "gpt_neox.layers.{i}.attention.dense.weight": [HIDDEN, HIDDEN],
                      "gpt_neox.layers.{i}.mlp.dense_h_to_4h.weight": [FFN, HIDDEN],
                      "gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight": [HIDDEN, FFN],
                      "gpt_neox.layers.{i}.input_layernorm.weight": [HIDDEN]})}
PHI3 = {"model.embed_tokens.weight": [VOCAB, HIDDEN], "lm_head.weight": [VOCAB, HIDDEN],
        **layers({"model.layers.{i}.self_attn.qkv_proj.weight": [3 * HIDDEN, HIDDEN],
                  "model.layers.{i}.self_attn.o_proj.weight": [HIDDEN, HIDDEN],
                  "model.layers.{i}.mlp.gate_up_proj.weight": [2 * FFN, HIDDEN],
                  "model.layers.{i}.mlp.down_proj.weight": [HIDDEN, FFN]})}
GEMMA = {"model.embed_tokens.weight": [VOCAB, HIDDEN], "model.norm.weight": [HIDDEN],
         **layers({f"model.layers.{{i}}.self_attn.{p}.weight": [HIDDEN, HIDDEN] for p in ("q_proj", "k_proj", "v_proj", "o_proj")}),
         **layers({f"model.layers.{{i}}.mlp.{p}.weight": [FFN, HIDDEN] for p in ("gate_proj", "up_proj")}),
         **layers({"model.layers.{i}.mlp.down_proj.weight": [HIDDEN, FFN]})}


def test_a_gpt_neox_checkpoints_modules_are_its_own(tmp_path):
    info = model_info.from_config(checkpoint(tmp_path / "m", "GPTNeoXForCausalLM", GPT_NEOX, tied=False, shards=2))
    assert info.linear_modules() == ["embed_out"] + [
        f"gpt_neox.layers.{i}.{m}" for i in range(2) for m in ("attention.dense", "attention.query_key_value",
                                                                "mlp.dense_4h_to_h", "mlp.dense_h_to_4h")]


def test_a_tied_head_is_a_module_without_a_tensor_of_its_own(tmp_path):
    info = model_info.from_config(checkpoint(tmp_path / "m", "Gemma2ForCausalLM", GEMMA, tied=True))
    modules = info.linear_modules()
    assert "lm_head" in modules and "model.embed_tokens" not in modules and len(modules) == 1 + 2 * 7
    assert modules.index("model.layers.0.mlp.down_proj") < modules.index("model.layers.1.mlp.down_proj")


def recipe(tmp_path: Path, model: Path, ignore: list[str]) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "model": {"kind": "local", "path": str(model)},
        "variants": [{"name": "bf16", "kind": "hf", "reference": True}, {"name": "g", "kind": "w8a8_int8", "ignore": ignore}],
        "evals": {"tasks": ["agreement"]}, "hardware": {"name": "x", "usd_per_hour": 1},
        "tracking": {"experiment": "x", "registered_model": "x"}}))
    return path


@pytest.mark.parametrize("pattern", ["embed_out", "re:.*query_key_value", "dense_4h_to_h"])
def test_ignore_patterns_are_checked_against_the_checkpoints_names(tmp_path, pattern):
    model = checkpoint(tmp_path / "m", "GPTNeoXForCausalLM", GPT_NEOX, tied=False)
    load_recipe(recipe(tmp_path, model, [pattern]))


def test_a_llama_name_on_another_family_is_refused_with_its_own_names(tmp_path):
    model = checkpoint(tmp_path / "m", "Phi3ForCausalLM", PHI3, tied=False)
    load_recipe(recipe(tmp_path, model, ["lm_head", "re:.*qkv_proj"]))
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe(tmp_path, model, ["lm_head", "re:.*q_proj"]))
    message = str(info.value)
    assert "variants[1].ignore[1]: 're:.*q_proj' matches no module of this Phi3ForCausalLM" in message
    assert "lm_head, model.layers.0.mlp.down_proj, model.layers.0.mlp.gate_up_proj" in message
    assert "self_attn.qkv_proj" in message


def test_weights_that_are_not_safetensors_leave_the_names_to_the_config(tmp_path):
    """Garbage whose first bytes read as a huge header length is refused before anything is read
    (it once asked for terabytes); the names then fall back to Llama's for a Llama config."""
    model = checkpoint(tmp_path / "m", "LlamaForCausalLM", {}, tied=True, shards=0)
    (model / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="is not a safetensors file"):
        model_info.tensor_shapes(model)
    info = model_info.from_config(model)
    assert info.modules is None and "model.layers.1.mlp.down_proj" in info.linear_modules()
