#!/usr/bin/env python3
"""Deterministic generator for the qg_sentiment evaluation set.

Binary sentiment classification of short, clearly positive or clearly negative
reviews built from templates and word lists over five domains (restaurant,
movie, hotel, gadget, book). Each item is

    context: "Review: The soup was cold and the waiter ignored us.\\nSentiment:"
    choices: [" positive", " negative"]      label: 1

and the model is scored by the log-likelihood of each label word. Most reviews
contain no negation; a minority (under 20%, category ``<domain>_negation``)
contain a negated adjective ("The plot is not original, ..."), always paired
with a second clause of the same polarity so the review stays unambiguous.

Stdlib only. Running it twice gives byte-identical output.

    python3 evalsets/sentiment/generate.py            # writes sentiment.jsonl next to this file
    python3 evalsets/sentiment/generate.py --out PATH
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SEED = 20261125
DEFAULT_OUT = Path(__file__).resolve().parent / "sentiment.jsonl"

CHOICES = [" positive", " negative"]  # label 0 = positive, 1 = negative

# Items per domain: PLAIN without negation, NEGATED with one (even counts, so
# both labels get exactly half of each).
PLAIN_PER_DOMAIN = 110
NEGATED_PER_DOMAIN = 20

# Extreme adjectives take "absolutely"/"truly" instead of "very"/"really".
EXTREME = {
    "perfect", "amazing", "excellent", "superb", "wonderful", "terrible", "awful",
    "disgusting", "filthy", "spotless", "stunning", "breathtaking", "brilliant",
    "outstanding", "gorgeous", "delicious", "fascinating", "useless", "horrible",
}
MODIFIERS = ["", "", "very ", "really ", "extremely ", "so "]
EXTREME_MODIFIERS = ["", "", "absolutely ", "truly "]

NEGATION_RE = re.compile(r"\b(not|never|no|nothing|nobody|none|barely|hardly)\b|n't",
                         re.IGNORECASE)

# --------------------------------------------------------------------------
# Domains. Each aspect type: (aspects as (noun phrase, is_plural), positive
# adjectives, negative adjectives). Clauses are whole positive/negative
# statements; openers/closers frame the review. {thing} names the reviewed item.
# --------------------------------------------------------------------------


def _sg(*names):
    return [(n, False) for n in names]


def _pl(*names):
    return [(n, True) for n in names]


DOMAINS = {
    "restaurant": {
        "tense": "past",
        "thing": "this place",
        "types": [
            (_sg("food", "soup", "pasta", "pizza", "steak", "dessert", "bread", "coffee",
                 "salad", "burger") + _pl("fries", "noodles"),
             ["delicious", "fresh", "tasty", "excellent", "perfect", "wonderful", "amazing",
              "superb"],
             ["cold", "bland", "stale", "awful", "disgusting", "terrible", "greasy",
              "tasteless", "soggy"]),
            (_sg("waiter", "waitress", "owner", "staff"),
             ["friendly", "kind", "helpful", "polite", "attentive", "welcoming", "charming"],
             ["rude", "unfriendly", "unhelpful", "careless", "impolite", "grumpy"]),
            (_sg("service"),
             ["fast", "quick", "excellent", "efficient", "friendly"],
             ["slow", "terrible", "awful", "sloppy"]),
            (_sg("dining room", "place", "terrace", "restaurant"),
             ["cozy", "clean", "charming", "lovely", "beautiful", "pleasant", "spotless"],
             ["dirty", "noisy", "cramped", "smelly", "gloomy", "filthy", "shabby"]),
        ],
        "pos_clauses": ["we will definitely come back", "I loved every bite",
                        "the portions were generous", "the prices were fair",
                        "the waiter made great suggestions", "everything tasted amazing",
                        "we had a lovely evening"],
        "neg_clauses": ["the waiter ignored us", "we waited an hour for our food",
                        "I felt sick afterwards", "the prices were far too high",
                        "the portions were tiny", "my plate was dirty",
                        "we had a miserable evening"],
    },
    "movie": {
        "tense": "present",
        "thing": "this film",
        "types": [
            (_sg("plot", "story", "script", "ending", "dialogue"),
             ["brilliant", "gripping", "clever", "moving", "excellent", "superb",
              "wonderful", "original"],
             ["boring", "dull", "predictable", "awful", "terrible", "confusing", "weak",
              "silly", "stupid"]),
            (_sg("acting", "cast", "lead actor") + _pl("performances"),
             ["brilliant", "superb", "excellent", "wonderful", "outstanding", "convincing"],
             ["wooden", "awful", "terrible", "weak", "flat", "unconvincing"]),
            (_sg("soundtrack", "music", "camera work") + _pl("special effects", "visuals"),
             ["stunning", "beautiful", "gorgeous", "excellent", "amazing"],
             ["cheap", "ugly", "awful", "annoying", "terrible"]),
        ],
        "pos_clauses": ["I was hooked from start to finish",
                        "the actors gave great performances", "I would happily watch it again",
                        "the whole audience cheered at the end",
                        "it is one of the best films of the year",
                        "every scene was a joy to watch"],
        "neg_clauses": ["I fell asleep halfway through", "I wanted to leave after twenty minutes",
                        "it was a complete waste of time", "the jokes fell flat",
                        "it is one of the worst films of the year",
                        "half the audience walked out"],
    },
    "hotel": {
        "tense": "past",
        "thing": "this hotel",
        "types": [
            (_sg("room", "bathroom", "lobby", "pool", "suite"),
             ["spotless", "spacious", "clean", "lovely", "beautiful", "modern"],
             ["dirty", "tiny", "smelly", "filthy", "cramped", "shabby"]),
            (_sg("bed", "mattress") + _pl("pillows"),
             ["comfortable", "soft", "cozy"],
             ["uncomfortable", "lumpy", "hard", "dirty"]),
            (_sg("staff", "receptionist", "manager"),
             ["friendly", "helpful", "polite", "welcoming", "kind"],
             ["rude", "unhelpful", "unfriendly", "careless"]),
            (_sg("breakfast"),
             ["delicious", "excellent", "fresh", "generous"],
             ["awful", "stale", "cold", "disappointing"]),
            (_sg("view"),
             ["stunning", "breathtaking", "lovely"],
             ["depressing", "ugly", "awful"]),
            (_sg("location"),
             ["perfect", "convenient", "excellent"],
             ["terrible", "inconvenient", "awful"]),
        ],
        "pos_clauses": ["we slept very well", "the staff made us feel welcome",
                        "we would gladly stay here again", "the room was cleaned every day",
                        "the check-in was quick and easy",
                        "we enjoyed every minute of our stay"],
        "neg_clauses": ["the shower was broken", "we slept terribly",
                        "there were stains on the sheets", "the air conditioning was broken",
                        "we checked out a day early", "we found a cockroach in the bathroom"],
    },
    "gadget": {
        "tense": "present",
        "thing": "this phone",
        "types": [
            (_sg("battery", "battery life"),
             ["excellent", "amazing", "great", "superb"],
             ["terrible", "awful", "weak", "poor", "disappointing"]),
            (_sg("screen", "camera", "display"),
             ["sharp", "bright", "stunning", "excellent", "gorgeous"],
             ["blurry", "dim", "grainy", "awful", "terrible"]),
            (_sg("sound", "speaker", "microphone"),
             ["clear", "crisp", "excellent", "rich"],
             ["tinny", "muffled", "awful", "terrible", "distorted"]),
            (_sg("design", "case", "build quality"),
             ["sleek", "elegant", "solid", "beautiful", "sturdy"],
             ["flimsy", "ugly", "bulky", "fragile"]),
            (_sg("software", "interface") + _pl("apps"),
             ["fast", "smooth", "reliable", "intuitive"],
             ["slow", "buggy", "confusing", "clunky", "unreliable"]),
        ],
        "pos_clauses": ["the battery lasts all day", "it works perfectly",
                        "it was worth every penny", "setup took two minutes",
                        "it charges very quickly", "I use it every day and love it"],
        "neg_clauses": ["the battery dies within hours", "it stopped working after a week",
                        "it crashes all the time", "it was a waste of money",
                        "the screen cracked on the first day", "it overheats constantly"],
    },
    "book": {
        "tense": "present",
        "thing": "this book",
        "types": [
            (_sg("plot", "story", "ending", "premise"),
             ["gripping", "brilliant", "clever", "moving", "original", "wonderful"],
             ["dull", "boring", "predictable", "silly", "confusing", "weak"]),
            (_sg("main character", "heroine", "villain") + _pl("characters"),
             ["memorable", "believable", "lovable", "wonderful", "fascinating"],
             ["flat", "dull", "annoying", "unbelievable", "lifeless"]),
            (_sg("writing", "prose", "dialogue", "style"),
             ["beautiful", "elegant", "vivid", "lively", "brilliant"],
             ["clumsy", "dull", "awkward", "tedious", "sloppy"]),
        ],
        "pos_clauses": ["I read it in one sitting", "I will recommend it to all my friends",
                        "the characters felt real", "I loved every page",
                        "it made me laugh and cry", "I am already reading it again"],
        "neg_clauses": ["I gave up after fifty pages", "I struggled to finish it",
                        "the characters felt fake", "it was a chore to read",
                        "I regret buying it", "it put me to sleep"],
    },
}

OPENERS = {
    "pos": ["What a great experience!", "Absolutely wonderful.", "I loved {thing}.",
            "Five stars."],
    "neg": ["What a disappointment.", "Terrible experience.", "I hated {thing}.",
            "One star."],
}
CLOSERS = {
    "pos": ["Highly recommended.", "I loved {thing}.", "I would recommend {thing} to anyone.",
            "Five stars."],
    "neg": ["Avoid {thing}.", "What a disappointment.", "I hated {thing}.", "One star."],
}

# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def copula(tense: str, is_plural: bool) -> str:
    if tense == "past":
        return "were" if is_plural else "was"
    return "are" if is_plural else "is"


def modified(rng: random.Random, adj: str) -> str:
    return rng.choice(EXTREME_MODIFIERS if adj in EXTREME else MODIFIERS) + adj


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def pick_aspects(rng: random.Random, domain: dict, n: int):
    """n distinct (noun phrase, is_plural, positive adjectives, negative adjectives)."""
    pool = [(a, pl, pos, neg) for aspects, pos, neg in domain["types"] for a, pl in aspects]
    picked = []
    while len(picked) < n:
        cand = rng.choice(pool)
        if all(cand[0] != p[0] for p in picked):
            picked.append(cand)
    return picked


def statement(rng, domain, aspect, polarity: str, exclude: set[str]) -> tuple[str, str]:
    """'the soup was very cold' -> (text, adjective)."""
    name, is_plural, pos, neg = aspect
    adj = rng.choice([a for a in (pos if polarity == "pos" else neg) if a not in exclude])
    return f"the {name} {copula(domain['tense'], is_plural)} {modified(rng, adj)}", adj


def plain_review(rng: random.Random, domain: dict, polarity: str) -> str:
    thing = domain["thing"]
    clauses = domain[f"{polarity}_clauses"]
    template = rng.randrange(5)
    if template == 0:  # two aspect statements
        a1, a2 = pick_aspects(rng, domain, 2)
        s1, adj1 = statement(rng, domain, a1, polarity, set())
        s2, _ = statement(rng, domain, a2, polarity, {adj1})
        return f"{cap(s1)} and {s2}."
    (a1,) = pick_aspects(rng, domain, 1)
    s1, _ = statement(rng, domain, a1, polarity, set())
    if template == 1:
        return f"{cap(s1)}. {cap(rng.choice(clauses))}."
    if template == 2:
        return f"{cap(rng.choice(clauses))}, and {s1}."
    if template == 3:
        return f"{rng.choice(OPENERS[polarity]).format(thing=thing)} {cap(s1)}."
    return f"{cap(rng.choice(clauses))}. {rng.choice(CLOSERS[polarity]).format(thing=thing)}"


def negated_review(rng: random.Random, domain: dict, polarity: str) -> str:
    """A negated adjective of the opposite polarity, plus a clause of the true polarity."""
    a1, a2 = pick_aspects(rng, domain, 2)
    name, is_plural, pos, neg = a1
    cop = copula(domain["tense"], is_plural)
    if polarity == "neg":
        first = f"The {name} {cop} not {rng.choice(pos)}"
    else:
        first = f"The {name} {cop} not {rng.choice(neg)} at all"
    if rng.random() < 0.5:
        second, _ = statement(rng, domain, a2, polarity, set())
        return f"{first}, and {second}."
    return f"{first}. {cap(rng.choice(domain[f'{polarity}_clauses']))}."


def generate(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    items: list[dict] = []
    seen: set[str] = set()
    for domain_name, domain in DOMAINS.items():
        for negated, count in ((False, PLAIN_PER_DOMAIN), (True, NEGATED_PER_DOMAIN)):
            category = f"{domain_name}_negation" if negated else domain_name
            made = 0
            attempts = 0
            while made < count:
                attempts += 1
                if attempts > count * 200:
                    raise RuntimeError(f"could not make {count} unique {category} items")
                label = made % 2  # exactly half positive within each category
                polarity = "pos" if label == 0 else "neg"
                review = (negated_review if negated else plain_review)(rng, domain, polarity)
                if bool(NEGATION_RE.search(review)) != negated:
                    raise AssertionError(f"negation mismatch in {category}: {review}")
                if review in seen:
                    continue
                seen.add(review)
                items.append({"context": f"Review: {review}\nSentiment:",
                              "choices": list(CHOICES), "label": label,
                              "category": category})
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
