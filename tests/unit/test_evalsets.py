"""Checks for the bundled qg_agreement evaluation set (stdlib + pyyaml only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SET_DIR = REPO / "evalsets" / "agreement"
JSONL = SET_DIR / "agreement.jsonl"
YAML = SET_DIR / "agreement.yaml"
GENERATOR = SET_DIR / "generate.py"


@pytest.fixture(scope="module")
def items() -> list[dict]:
    with open(JSONL, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_enough_items(items):
    assert len(items) >= 500


def test_item_schema(items):
    for item in items:
        assert set(item) == {"id", "context", "choices", "label", "phenomenon"}, item
        assert isinstance(item["context"], str) and item["context"].strip()
        assert isinstance(item["phenomenon"], str) and item["phenomenon"]
        choices = item["choices"]
        assert isinstance(choices, list) and len(choices) == 2, item
        assert choices[0] != choices[1], item
        for choice in choices:
            assert isinstance(choice, str) and choice.startswith(" ") and choice.strip(), item


def test_labels_binary_and_balanced(items):
    labels = [item["label"] for item in items]
    assert set(labels) <= {0, 1}
    assert all(type(label) is int for label in labels)
    share0 = labels.count(0) / len(labels)
    assert 0.35 <= share0 <= 0.65
    assert 0.35 <= 1 - share0 <= 0.65


def test_ids_unique(items):
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids)


def test_no_duplicate_pairs(items):
    keys = [(item["context"], tuple(item["choices"])) for item in items]
    assert len(set(keys)) == len(keys)


def test_generator_reproduces_file(tmp_path):
    out = tmp_path / "agreement.jsonl"
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)],
                   check=True, capture_output=True, cwd=tmp_path)
    assert out.read_bytes() == JSONL.read_bytes()


def test_yaml_config():
    config = yaml.safe_load(YAML.read_text(encoding="utf-8"))
    assert config["task"] == "qg_agreement"
    assert config["output_type"] == "multiple_choice"
    assert config["target_delimiter"] == ""
    assert config["dataset_kwargs"]["data_files"]["test"].endswith("agreement.jsonl")
