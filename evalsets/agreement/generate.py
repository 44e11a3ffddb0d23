#!/usr/bin/env python3
"""Deterministic generator for the qg_agreement evaluation set.

English subject-verb agreement minimal pairs (BLiMP-style). Each item is a
shared prefix (``context``: the sentence up to and including the subject noun
phrase) and two continuations that differ only in the number of the main verb.
The model is scored by comparing the log-likelihood of the two continuations.

Stdlib only. Running it twice gives byte-identical output.

    python3 evalsets/agreement/generate.py            # writes agreement.jsonl next to this file
    python3 evalsets/agreement/generate.py --out PATH
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261123
DEFAULT_OUT = Path(__file__).resolve().parent / "agreement.jsonl"

# Items per phenomenon. Easy (simple_* + irregular_plural) = 300, hard = 300.
COUNTS = {
    "simple_be": 70,
    "simple_past_be": 60,
    "simple_have": 60,
    "simple_verb": 70,
    "irregular_plural": 40,
    "pp_attractor": 180,
    "relative_clause": 120,
}

# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

IRREGULAR = {
    "child": "children",
    "man": "men",
    "woman": "women",
    "mouse": "mice",
    "person": "people",
}


def plural(noun: str) -> str:
    if noun in IRREGULAR:
        return IRREGULAR[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


PEOPLE = [
    "author", "teacher", "doctor", "farmer", "student", "pilot", "singer",
    "nurse", "lawyer", "driver", "dancer", "guard", "officer", "baker",
    "painter", "neighbor", "manager", "actor", "soldier", "worker",
]
ANIMALS = ["dog", "cat", "horse", "bird", "cow", "rabbit", "duck", "goat", "pig", "fox"]
OBJECTS = [
    "key", "book", "box", "lamp", "bottle", "chair", "picture", "letter", "cup",
    "bag", "plate", "clock", "coat", "pen", "ticket", "map", "phone", "blanket",
    "basket",
]
IRREGULAR_PEOPLE = ["child", "man", "woman", "person"]
IRREGULAR_ANIMALS = ["mouse"]

ADJECTIVES = {
    "people": ["old", "young", "tall", "friendly", "new", "tired", "happy", "quiet"],
    "animals": ["old", "young", "small", "big", "brown", "black", "white", "hungry"],
    "objects": ["old", "new", "small", "big", "red", "blue", "heavy", "green"],
}

# Predicates: (kind, singular verb, plural verb, rest of sentence)
def _be(rest):
    return ("be", "is", "are", rest)


def _was(rest):
    return ("past_be", "was", "were", rest)


def _has(rest):
    return ("have", "has", "have", rest)


def _v(sg, pl, rest=""):
    return ("verb", sg, pl, rest)


PREDICATES = {
    "people": [
        _be("in the room"), _be("at home"), _be("very busy"), _be("late again"),
        _be("ready to leave"), _be("outside"), _be("in the kitchen"),
        _was("at the party"), _was("very happy"), _was("in the park"),
        _was("tired after the trip"), _was("at home yesterday"), _was("late for dinner"),
        _has("left the building"), _has("finished the work"), _has("seen the movie"),
        _has("arrived at the station"), _has("gone home"), _has("lost the key"),
        _v("laughs", "laugh"), _v("smiles", "smile"), _v("sings", "sing", "every morning"),
        _v("lives", "live", "in the city"), _v("reads", "read", "a lot"),
        _v("plays", "play", "outside"), _v("knows", "know", "the answer"),
        _v("wants", "want", "to go home"), _v("needs", "need", "help"),
        _v("walks", "walk", "to the park"), _v("sleeps", "sleep", "late"),
        _v("watches", "watch", "the news"), _v("goes", "go", "to bed early"),
    ],
    "animals": [
        _be("in the garden"), _be("in the barn"), _be("asleep"), _be("hungry"),
        _be("near the river"), _be("under the tree"),
        _was("in the yard"), _was("lost"), _was("asleep"), _was("near the fence"),
        _was("very hungry"),
        _has("run away"), _has("eaten"), _has("escaped from the farm"),
        _has("found some food"), _has("fallen asleep"),
        _v("sleeps", "sleep", "all day"), _v("runs", "run", "very fast"),
        _v("eats", "eat", "a lot"), _v("drinks", "drink", "water"),
        _v("jumps", "jump", "over the fence"), _v("likes", "like", "the sun"),
        _v("makes", "make", "a lot of noise"), _v("looks", "look", "hungry"),
    ],
    "objects": [
        _be("on the table"), _be("in the kitchen"), _be("under the bed"),
        _be("next to the door"), _be("in the car"), _be("on the shelf"),
        _be("still missing"),
        _was("on the table"), _was("in the garage"), _was("behind the sofa"),
        _was("lost last week"), _was("found yesterday"),
        _has("been moved"), _has("been lost"), _has("been cleaned"),
        _has("fallen off the shelf"), _has("disappeared"),
        _v("belongs", "belong", "to my sister"), _v("sits", "sit", "on the desk"),
        _v("looks", "look", "expensive"), _v("costs", "cost", "ten dollars"),
        _v("stays", "stay", "in the drawer"),
    ],
}

# Prepositional-phrase attractors: (preposition phrase, attractor noun).
PP_GENERIC = {
    "people": [
        ("with the", "dog"), ("near the", "window"), ("behind the", "desk"),
        ("from the", "village"), ("next to the", "car"), ("at the", "gate"),
    ],
    "animals": [
        ("of the", "farmer"), ("near the", "house"), ("behind the", "barn"),
        ("next to the", "tree"), ("from the", "farm"), ("with the", "child"),
    ],
    "objects": [
        ("from the", "store"), ("for the", "guest"), ("belonging to the", "student"),
        ("from the", "office"), ("near the", "window"), ("for the", "child"),
    ],
}
PP_SPECIFIC = {
    "teacher": [("of the", "student")],
    "manager": [("of the", "store")],
    "driver": [("of the", "bus")],
    "author": [("of the", "book")],
    "pilot": [("of the", "plane")],
    "singer": [("in the", "band")],
    "guard": [("at the", "bank")],
    "key": [("to the", "cabinet"), ("to the", "door"), ("to the", "room")],
    "book": [("about the", "island"), ("about the", "bird")],
    "picture": [("of the", "mountain"), ("of the", "child")],
    "letter": [("from the", "lawyer"), ("to the", "farmer")],
    "map": [("of the", "island"), ("of the", "city")],
    "ticket": [("for the", "show"), ("for the", "train")],
}

# Relative clauses: embedded verbs (singular, plural). Past forms carry no number.
RC_VERBS = {
    "people": [("likes", "like"), ("knows", "know"), ("admires", "admire"),
               ("trusts", "trust"), ("visits", "visit"), ("helps", "help"),
               ("met", "met"), ("saw", "saw"), ("hired", "hired"), ("called", "called")],
    "animals": [("feeds", "feed"), ("owns", "own"), ("likes", "like"),
                ("found", "found"), ("saw", "saw"), ("bought", "bought")],
    "objects": [("needs", "need"), ("wants", "want"), ("uses", "use"),
                ("bought", "bought"), ("found", "found"), ("moved", "moved"),
                ("lost", "lost"), ("sold", "sold")],
}

STOPWORDS = {
    "the", "a", "an", "to", "of", "in", "on", "at", "for", "from", "with",
    "very", "near", "next", "behind", "under", "that", "who", "about",
    "belonging", "over", "some", "lot", "all", "again", "my",
}

# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def np_(noun: str, is_plural: bool) -> str:
    return plural(noun) if is_plural else noun


def head_np(rng: random.Random, cat: str, noun: str, is_plural: bool) -> str:
    words = ["The"]
    if rng.random() < 0.5:
        words.append(rng.choice(ADJECTIVES[cat]))
    words.append(np_(noun, is_plural))
    return " ".join(words)


def pick_predicate(rng: random.Random, cat: str, kind: str | None = None):
    preds = PREDICATES[cat]
    if kind is not None:
        preds = [p for p in preds if p[0] == kind]
    return rng.choice(preds)


def continuations(pred, is_plural: bool) -> tuple[str, str]:
    """Return (grammatical, ungrammatical) continuations."""
    _, sg, pl, rest = pred
    tail = (" " + rest if rest else "") + "."
    good, bad = (pl, sg) if is_plural else (sg, pl)
    return " " + good + tail, " " + bad + tail


def content_words(text: str) -> set[str]:
    return {w.strip(".").lower() for w in text.split()} - STOPWORDS


def category_pick(rng: random.Random):
    cat = rng.choice(["people", "people", "animals", "objects"])
    nouns = {"people": PEOPLE, "animals": ANIMALS, "objects": OBJECTS}[cat]
    return cat, rng.choice(nouns)


def make_simple(rng, kind, is_plural):
    cat, noun = category_pick(rng)
    return head_np(rng, cat, noun, is_plural), pick_predicate(rng, cat, kind)


def make_irregular(rng, is_plural):
    if rng.random() < 0.2:
        cat, noun = "animals", rng.choice(IRREGULAR_ANIMALS)
    else:
        cat, noun = "people", rng.choice(IRREGULAR_PEOPLE)
    return head_np(rng, cat, noun, is_plural), pick_predicate(rng, cat)


def make_pp(rng, is_plural):
    cat, noun = category_pick(rng)
    options = PP_GENERIC[cat] + PP_SPECIFIC.get(noun, []) * 3
    prep, attractor = rng.choice(options)
    if attractor == noun:
        return None
    # Attractor has the opposite number to the head noun.
    context = f"{head_np(rng, cat, noun, is_plural)} {prep} {np_(attractor, not is_plural)}"
    return context, pick_predicate(rng, cat)


def make_rc(rng, is_plural):
    cat, noun = category_pick(rng)
    embedded = rng.choice(PEOPLE + IRREGULAR_PEOPLE)
    if embedded == noun:
        return None
    emb_plural = not is_plural  # opposite number to the head noun
    v_sg, v_pl = rng.choice(RC_VERBS[cat])
    rel = "who" if cat == "people" and rng.random() < 0.5 else "that"
    context = (f"{head_np(rng, cat, noun, is_plural)} {rel} the "
               f"{np_(embedded, emb_plural)} {v_pl if emb_plural else v_sg}")
    return context, pick_predicate(rng, cat)


SIMPLE_KIND = {
    "simple_be": "be",
    "simple_past_be": "past_be",
    "simple_have": "have",
    "simple_verb": "verb",
}


def build_one(rng, phenomenon, is_plural):
    if phenomenon in SIMPLE_KIND:
        return make_simple(rng, SIMPLE_KIND[phenomenon], is_plural)
    if phenomenon == "irregular_plural":
        return make_irregular(rng, is_plural)
    if phenomenon == "pp_attractor":
        return make_pp(rng, is_plural)
    if phenomenon == "relative_clause":
        return make_rc(rng, is_plural)
    raise ValueError(phenomenon)


def generate(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    items: list[dict] = []
    seen: set[tuple] = set()
    for phenomenon, count in COUNTS.items():
        made = 0
        attempts = 0
        while made < count:
            attempts += 1
            if attempts > count * 200:
                raise RuntimeError(f"could not make {count} unique {phenomenon} items")
            is_plural = made % 2 == 1  # subject number balanced within each phenomenon
            built = build_one(rng, phenomenon, is_plural)
            if built is None:
                continue
            context, pred = built
            good, bad = continuations(pred, is_plural)
            # Avoid repeating a content word of the subject in the predicate
            # ("The old key ... is very old", "The dog behind the fence jumps over the fence").
            if content_words(context) & content_words(good):
                continue
            label = rng.randint(0, 1)
            choices = [good, bad] if label == 0 else [bad, good]
            key = (context, tuple(sorted(choices)))
            if key in seen:
                continue
            seen.add(key)
            items.append({"context": context, "choices": choices, "label": label,
                          "phenomenon": phenomenon})
            made += 1
    rng.shuffle(items)
    return [{"id": i, **item} for i, item in enumerate(items)]


def write(items: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output JSONL path (default: {DEFAULT_OUT.name} next to this script)")
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    items = generate(args.seed)
    write(items, args.out)
    print(f"wrote {len(items)} items to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
