#!/usr/bin/env python3
"""Deterministic generator for the qg_recall evaluation set: long-context retrieval.

Each item hides two five-digit numbers, a pass key and a decoy (a door code), at random depths in a
few hundred tokens of repeated filler (the filler of the pass-key retrieval test of Mohtashami &
Jaggi, 2023) and asks for the pass key, with four numbers to choose from: the pass key, the decoy
and two numbers that are not in the text. Copying any number seen gets half the items right at
best; the answer needs the key looked up across the whole context, which is what a quantized KV
cache stores. Stdlib only; running it twice gives byte-identical output.

    python3 evalsets/recall/generate.py            # writes recall.jsonl next to this file
    python3 evalsets/recall/generate.py --out PATH
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261201
ITEMS = 200
DEFAULT_OUT = Path(__file__).resolve().parent / "recall.jsonl"
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
# filler repeats per item: about 24 tokens each, so 300-800 tokens a prompt (the demo's llama.cpp
# slots hold 1024, its vLLM sequences 2048)
MIN_REPEATS, MAX_REPEATS = 12, 32
INTRO = "There is a pass key hidden inside a lot of irrelevant text. Find it and remember it.\n\n"
QUESTION = "\n\nWhat is the pass key? The pass key is"
POSITIONS = ("start", "middle", "end")  # which third of the filler the key is in


def number(rng: random.Random, taken: set[int]) -> int:
    while True:
        value = rng.randrange(10000, 100000)
        if value not in taken:
            taken.add(value)
            return value


def item(rng: random.Random, index: int) -> dict[str, object]:
    repeats = rng.randint(MIN_REPEATS, MAX_REPEATS)
    taken: set[int] = set()
    key, decoy = number(rng, taken), number(rng, taken)
    key_at, decoy_at = rng.randint(0, repeats), rng.randint(0, repeats)
    parts = [FILLER] * repeats
    # the later position first, so the earlier one still points where it was drawn
    for at, fact in sorted([(key_at, f"The pass key is {key}. Remember it. {key} is the pass key. "),
                            (decoy_at, f"The door code is {decoy}. ")], key=lambda p: -p[0]):
        parts.insert(at, fact)
    choices = [key, decoy, number(rng, taken), number(rng, taken)]
    rng.shuffle(choices)
    return {"id": index, "context": INTRO + "".join(parts).rstrip() + QUESTION,
            "choices": [f" {c}." for c in choices], "label": choices.index(key),
            "position": POSITIONS[min(3 * key_at // (repeats + 1), 2)]}


def generate() -> list[dict[str, object]]:
    rng = random.Random(SEED)
    return [item(rng, i) for i in range(ITEMS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with open(args.out, "w", encoding="utf-8") as out:
        for row in generate():
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {ITEMS} items to {args.out}")


if __name__ == "__main__":
    main()
