"""Reproducible quantization: every backend, run twice on the same inputs into two stores, makes the
same key and the same bytes (the manifest's sha256), so a cached artifact stands for any re-run.
GGUF is run through its longest path (F16 conversion, importance matrix, llama-quantize), and
llm-compressor through GPTQ, the scheme that was not reproducible (AWQ came out the same either way).

llm-compressor drew its calibration samples in a new random order each process, and GPTQ's
Hessians accumulate over them: on this tiny model 8 of GPTQ's 48 tensors came out different run to
run before the worker fixed the order and the seeds (this test then fails for GPTQ). The importance
matrix recorded its text file's path, and the quantized model the matrix's: two stores, two files,
until the tools were run beside their files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import source
from pipeline.artifacts import Store
from pipeline.quantize import quantizer_for
from pipeline.recipe.load import load_recipe
from pipeline.settings import REPO_ROOT
from pipeline.toolenv import TRANSFORMERS, tool_env

pytestmark = pytest.mark.integration

ENVS = REPO_ROOT / ".venvs"
VARIANTS = {
    "q4_k_m": {"kind": "gguf", "type": "Q4_K_M"},
    "q4_k_m-imatrix": {"kind": "gguf", "type": "Q4_K_M", "imatrix": True},
    "gptq": {"kind": "w4a16_gptq", "engine": "vllm"},
}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("reproducible")
    data = {"name": "reproducible", "model": {"kind": "local", "path": str(tiny_model)},
            "variants": [{"name": "f16", "kind": "gguf", "type": "F16", "reference": True},
                         {"name": "bf16", "kind": "hf", "engine": "vllm", "reference": True},
                         *({"name": name, **fields} for name, fields in VARIANTS.items()),
                         {"name": "q2_k-imatrix", "kind": "gguf", "type": "Q2_K", "imatrix": True}],
            "calibration": {"samples": 8, "max_seq_len": 64},
            "evals": {"tasks": ["agreement"]},
            "hardware": {"name": "ci", "usd_per_hour": 0.1},
            "tracking": {"experiment": "reproducible", "registered_model": "reproducible"}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


@pytest.mark.parametrize("name", ["q4_k_m-imatrix", "gptq"])  # one per backend that computes, its longest path
def test_quantizing_twice_makes_the_same_bytes(recipe, tmp_path, name):
    variant = next(v for v in recipe.variants if v.name == name)
    manifests = []
    for attempt in ("first", "second"):
        store = Store(tmp_path / attempt)
        model = source.run(recipe.model, store, tool_env(TRANSFORMERS, ENVS), recipe.timeouts.source)
        artifact = quantizer_for(variant.kind, ENVS, recipe).quantize(variant, model, store, recipe.content_hash())
        assert not artifact.cached
        manifests.append(artifact.manifest)
    first, second = manifests
    assert first["key"] == second["key"]
    assert first["sha256"] == second["sha256"], f"{name}: the same key made different bytes"
    assert first["deterministic"] is True


def test_an_importance_matrix_is_made_once_for_the_types_that_ask_and_changes_their_rounding(recipe, tmp_path):
    store = Store(tmp_path / "store")
    model = source.run(recipe.model, store, tool_env(TRANSFORMERS, ENVS), recipe.timeouts.source)
    made = {}
    for name in ("q4_k_m", "q4_k_m-imatrix", "q2_k-imatrix"):
        variant = next(v for v in recipe.variants if v.name == name)
        made[name] = quantizer_for(variant.kind, ENVS, recipe).quantize(variant, model, store,
                                                                        recipe.content_hash()).manifest
    imatrices = [p for p in (tmp_path / "store" / "imatrix").iterdir() if (p / "result.json").is_file()]
    assert len(imatrices) == 1  # computed once, on the F16 conversion, for both types
    weighted = made["q4_k_m-imatrix"]["imatrix"]
    assert weighted == made["q2_k-imatrix"]["imatrix"] and weighted["key"] == imatrices[0].name
    assert weighted["chunks"] == recipe.calibration.samples  # 8 chunks of 64 tokens: the texts hold more
    assert weighted["calibration"]["samples"] == 8 and len(weighted["calibration"]["samples_sha256"]) == 64
    assert "imatrix" not in made["q4_k_m"] and made["q4_k_m"]["key"] != made["q4_k_m-imatrix"]["key"]
    # the same type and tensor types, other bytes: the rounding followed the importance matrix
    assert made["q4_k_m"]["tensor_type_counts"] == made["q4_k_m-imatrix"]["tensor_type_counts"]
    assert made["q4_k_m"]["sha256"] != made["q4_k_m-imatrix"]["sha256"]
    assert made["q4_k_m-imatrix"]["quantization"] == {"kind": "gguf", "type": "Q4_K_M", "imatrix": True}
