#!/usr/bin/env python3
"""Generates inflection.jsonl: a generative task (the model writes the word form), deterministic.

Words: the irregular plurals, irregular past tenses and comparatives of evalsets/morphology (read
from its generator, so the two sets agree), plus regular nouns and verbs listed here. Each item is
a kind of form and a base word; the answer is one word. The five few-shot words in the YAML's
prompt are left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "inflection.jsonl"
SEED = 20261130
FEW_SHOT = {"cat", "jump", "child", "go", "big"}  # the words in the YAML's prompt

REGULAR_NOUNS = ["dog", "book", "tree", "house", "car", "bird", "girl", "boy", "apple", "chair", "table",
                 "window", "river", "flower", "horse", "box", "fox", "bus", "church", "dish", "watch",
                 "glass", "brush", "class", "city", "baby", "story", "party", "lady", "country", "cherry",
                 "family", "key", "toy", "day", "boat", "road", "hand", "door", "cup", "plate", "shoe",
                 "ship", "lamp", "song", "pen", "bottle", "garden", "friend", "teacher", "farmer", "bridge",
                 "coin", "hat", "map", "ring", "star", "wall", "bench", "match"]
REGULAR_VERBS = ["walk", "play", "talk", "open", "clean", "cook", "help", "call", "look", "ask", "work",
                 "watch", "visit", "paint", "climb", "jump", "stop", "plan", "drop", "shop", "hop", "rob",
                 "try", "cry", "carry", "study", "marry", "hurry", "like", "love", "dance", "smile",
                 "close", "move", "hope", "live", "bake", "share", "wash", "fix", "kick", "push", "pull",
                 "start", "want", "need", "wait", "laugh", "answer", "listen", "travel", "enjoy",
                 "stay", "obey", "fill", "kill", "touch", "wish"]


def _morphology():
    spec = importlib.util.spec_from_file_location("morphology_generate",
                                                  HERE.parents[1] / "evalsets" / "morphology" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _regular_plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _regular_past(verb: str) -> str:
    if verb in {"stop", "plan", "drop", "shop", "hop", "rob"}:
        return verb + verb[-1] + "ed"
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def items() -> list[dict]:
    morph = _morphology()
    rows: list[tuple[str, str, str, str]] = []  # (form, word, answer, category)
    rows += [("Plural", s, p, "irregular") for s, p, *_ in morph.PLURALS]
    rows += [("Plural", n, _regular_plural(n), "regular") for n in REGULAR_NOUNS]
    rows += [("Past tense", v, p, "irregular") for v, p, *_ in morph.PAST_VERBS]
    rows += [("Past tense", v, _regular_past(v), "regular") for v in REGULAR_VERBS]
    short = sorted({a for group in morph.COMP_GROUPS.values() for a in group["short"]})
    for adj in short + sorted(morph.IRREGULAR_ADJ):
        kind = "irregular" if adj in morph.IRREGULAR_ADJ else "short"
        for form, superlative in (("Comparative", False), ("Superlative", True)):
            rows.append((form, adj, morph.comparative_pair(adj, kind, superlative)[0],
                         "irregular" if kind == "irregular" else "regular"))
    seen = set()
    unique = []
    for form, word, answer, category in rows:
        if word in FEW_SHOT or (form, word) in seen:
            continue
        seen.add((form, word))
        unique.append({"form": form, "word": word, "answer": answer, "category": category})
    random.Random(SEED).shuffle(unique)
    return [{"id": i, **row} for i, row in enumerate(unique)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args().out
    with open(out, "w", encoding="utf-8") as handle:
        for item in items():
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
