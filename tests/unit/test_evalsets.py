"""Checks for the bundled evaluation sets under evalsets/ (stdlib + pyyaml only).

Every folder evalsets/<name>/ that holds <name>.yaml is a task set and gets the
same checks: evalsets/<name>/<name>.jsonl, evalsets/<name>/generate.py and an
lm-eval task named qg_<name>.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EVALSETS = REPO / "evalsets"
SET_NAMES = sorted(p.name for p in EVALSETS.iterdir() if (p / f"{p.name}.yaml").is_file())
BASE_KEYS = {"id", "context", "choices", "label"}


# long prompts are costly to score: the recall set is smaller
MIN_ITEMS = {"recall": 200}


def test_expected_sets_present():
    assert {"agreement", "morphology", "sentiment", "recall"} <= set(SET_NAMES)


@pytest.fixture(params=SET_NAMES, scope="module")
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def items(name) -> list[dict]:
    with open(EVALSETS / name / f"{name}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_enough_items(name, items):
    assert len(items) >= MIN_ITEMS.get(name, 500)


def test_item_schema(items):
    # The base fields plus exactly one category field (e.g. "phenomenon", "category").
    extra = set(items[0]) - BASE_KEYS
    assert len(extra) == 1, items[0]
    (category,) = extra
    for item in items:
        assert set(item) == BASE_KEYS | {category}, item
        assert isinstance(item["context"], str) and item["context"].strip()
        assert isinstance(item[category], str) and item[category]
        choices = item["choices"]
        assert isinstance(choices, list) and len(choices) == len(items[0]["choices"]) >= 2, item
        assert len(set(choices)) == len(choices), item
        for choice in choices:
            assert isinstance(choice, str) and choice.startswith(" ") and choice.strip(), item


def test_labels_in_range_and_balanced(items):
    labels = [item["label"] for item in items]
    n_choices = len(items[0]["choices"])
    assert set(labels) <= set(range(n_choices))
    assert all(type(label) is int for label in labels)
    for choice in range(n_choices):  # no position the right answer favours (±15 points of even)
        assert abs(labels.count(choice) / len(labels) - 1 / n_choices) <= 0.15, choice


def test_ids_unique(items):
    ids = [item["id"] for item in items]
    assert len(set(ids)) == len(ids)


def test_no_duplicate_pairs(items):
    keys = [(item["context"], tuple(item["choices"])) for item in items]
    assert len(set(keys)) == len(keys)


def test_generator_reproduces_file(name, tmp_path):
    out = tmp_path / f"{name}.jsonl"
    subprocess.run([sys.executable, str(EVALSETS / name / "generate.py"), "--out", str(out)],
                   check=True, capture_output=True, cwd=tmp_path)
    assert out.read_bytes() == (EVALSETS / name / f"{name}.jsonl").read_bytes()


def test_yaml_config(name):
    config = yaml.safe_load((EVALSETS / name / f"{name}.yaml").read_text(encoding="utf-8"))
    assert config["task"] == f"qg_{name}"
    assert config["output_type"] == "multiple_choice"
    assert config["target_delimiter"] == ""
    assert config["dataset_kwargs"]["data_files"]["test"] == f"evalsets/{name}/{name}.jsonl"


def test_sentiment_negation_share():
    path = EVALSETS / "sentiment" / "sentiment.jsonl"
    with open(path, encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    negated = [item for item in items if item["category"].endswith("_negation")]
    assert 0 < len(negated) <= 0.2 * len(items)
    assert all(item["choices"] == [" positive", " negative"] for item in items)


def test_recall_prompts_hold_both_facts_and_the_key_is_among_the_choices():
    path = EVALSETS / "recall" / "recall.jsonl"
    with open(path, encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    for item in items:
        key = item["choices"][item["label"]].strip(" .")
        assert f"The pass key is {key}." in item["context"], item["id"]
        decoys = [c.strip(" .") for c in item["choices"] if f"door code is {c.strip(' .')}." in item["context"]]
        assert len(decoys) == 1 and decoys[0] != key, item["id"]
        assert item["context"].endswith("The pass key is")
    assert {item["position"] for item in items} == {"start", "middle", "end"}
