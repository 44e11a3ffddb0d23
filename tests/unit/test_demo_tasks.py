"""The demo's generative task: its data file is what its generator writes, and every item has one
one-word answer the few-shot prompt does not already give away."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

FOLDER = Path(__file__).resolve().parents[2] / "demo-tasks" / "inflection"


def items() -> list[dict]:
    return [json.loads(line) for line in (FOLDER / "inflection.jsonl").read_text().splitlines()]


def test_generator_reproduces_the_committed_file(tmp_path):
    out = tmp_path / "inflection.jsonl"
    subprocess.run([sys.executable, str(FOLDER / "generate.py"), "--out", str(out)], check=True)
    assert out.read_bytes() == (FOLDER / "inflection.jsonl").read_bytes()


def test_items_are_unique_one_word_answers_not_in_the_prompt():
    rows = items()
    prompt = yaml.safe_load((FOLDER / "inflection.yaml").read_text())["doc_to_text"]
    shots = {line.split(" of ")[1].split(":")[0] for line in prompt.splitlines()[:-1]}  # the last is the item
    assert shots == {"cat", "jump", "child", "go", "big"}
    assert len({(r["form"], r["word"]) for r in rows}) == len(rows) >= 200
    assert not {r["word"] for r in rows} & shots
    assert all(r["answer"].isalpha() and r["answer"] != "" for r in rows)
    assert {r["form"] for r in rows} == {"Plural", "Past tense", "Comparative", "Superlative"}
    by_word = {(r["form"], r["word"]): r["answer"] for r in rows}
    assert by_word[("Plural", "mouse")] == "mice" and by_word[("Past tense", "stop")] == "stopped"
    assert by_word[("Plural", "city")] == "cities" and by_word[("Superlative", "good")] == "best"
