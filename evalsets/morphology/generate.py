#!/usr/bin/env python3
"""Deterministic generator for the qg_morphology evaluation set.

English morphology minimal pairs. Each item is a shared prefix (``context``)
and two continuations that differ only in one inflected word (or in the
article a/an); the rest of each continuation is the same. The model is scored
by comparing the log-likelihood of the two continuations. Four phenomena:

- ``a_an``: indefinite article before a consonant or vowel sound
  ("She ate" -> " an apple." vs " a apple.").
- ``irregular_past``: irregular past tense vs the regularised "-ed" form
  ("Yesterday the boy" -> " went home." vs " goed home.").
- ``irregular_plural``: irregular plural vs the regularised "-s" form
  ("There were three" -> " mice in the barn." vs " mouses in the barn.").
- ``comparative``: comparative/superlative formation
  ("This box is" -> " bigger than that one." vs " more big than that one.";
  "This film is" -> " more exciting than that one." vs " excitinger than that one.").

Stdlib only. Running it twice gives byte-identical output.

    python3 evalsets/morphology/generate.py            # writes morphology.jsonl next to this file
    python3 evalsets/morphology/generate.py --out PATH
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261124
DEFAULT_OUT = Path(__file__).resolve().parent / "morphology.jsonl"

# Items per phenomenon (even, so labels can be split exactly in half).
COUNTS = {
    "a_an": 160,
    "irregular_past": 160,
    "irregular_plural": 160,
    "comparative": 160,
}

# --------------------------------------------------------------------------
# a / an
# --------------------------------------------------------------------------

# Words whose spelling matches their first sound. Deliberately excluded:
# hour, honest, heir, university, unicorn, useful, one, European, ...
AAN_SUBJECTS = [
    "She", "He", "I", "We", "My sister", "My brother", "The boy", "The girl",
    "Tom", "Anna", "Our teacher", "My friend", "The old man",
]

AAN_CLASSES = {
    "food": {
        "verbs": ["ate", "bought", "wanted", "had", "chose"],
        "vowel_nouns": ["apple", "egg", "orange", "onion", "apricot", "avocado",
                        "olive", "omelette"],
        "consonant_nouns": ["banana", "sandwich", "cookie", "pear", "peach", "carrot",
                            "potato", "muffin", "cake", "lemon"],
        "vowel_adjs": ["enormous", "old", "extra", "expensive"],
        "consonant_adjs": ["big", "small", "fresh", "huge", "tiny", "large", "cold"],
        "tails": ["", " for lunch", " this morning", " yesterday"],
    },
    "animals": {
        "verbs": ["saw", "found", "drew", "photographed", "fed"],
        "vowel_nouns": ["elephant", "owl", "eagle", "ant", "octopus", "iguana",
                        "ostrich", "alligator", "antelope"],
        "consonant_nouns": ["dog", "cat", "horse", "bird", "rabbit", "tiger", "lion",
                            "monkey", "frog", "fox", "bear", "duck"],
        "vowel_adjs": ["old", "angry", "enormous", "injured", "adorable"],
        "consonant_adjs": ["big", "small", "tiny", "huge", "young", "black", "white",
                           "brown", "hungry"],
        "tails": ["", " at the zoo", " yesterday", " last week"],
    },
    "objects": {
        "verbs": ["bought", "found", "needed", "wanted", "borrowed", "ordered"],
        "vowel_nouns": ["umbrella", "envelope", "eraser", "album", "axe", "armchair",
                        "iron", "oven"],
        "consonant_nouns": ["pencil", "bag", "lamp", "chair", "clock", "bottle", "box",
                            "ticket", "hat", "kite", "blanket", "ladder", "hammer",
                            "notebook"],
        "vowel_adjs": ["old", "expensive", "elegant", "ordinary", "ugly", "orange"],
        "consonant_adjs": ["new", "big", "small", "cheap", "red", "blue", "black", "nice",
                           "large"],
        "tails": ["", " yesterday", " last week", " for the trip"],
    },
}


def make_a_an(rng: random.Random, vowel: bool):
    """vowel=True: the correct article is "an"."""
    cls = AAN_CLASSES[rng.choice(sorted(AAN_CLASSES))]
    context = f"{rng.choice(AAN_SUBJECTS)} {rng.choice(cls['verbs'])}"
    # The word right after the article decides; it is either the noun or an adjective.
    if rng.random() < 0.5:
        words = rng.choice(cls["vowel_nouns"] if vowel else cls["consonant_nouns"])
    else:
        adj = rng.choice(cls["vowel_adjs"] if vowel else cls["consonant_adjs"])
        noun = rng.choice(cls["vowel_nouns"] + cls["consonant_nouns"])
        words = f"{adj} {noun}"
    tail = f" {words}{rng.choice(cls['tails'])}."
    good, bad = ("an", "a") if vowel else ("a", "an")
    return context, " " + good + tail, " " + bad + tail


# --------------------------------------------------------------------------
# Irregular past tense
# --------------------------------------------------------------------------

# (base, past, regularised wrong form, objects/complements). Verbs whose
# regularised form is itself a word with a past reading (hanged, lighted,
# flied, payed, leaded, singed, waked, shined, ...) are left out.
PAST_VERBS = [
    ("go", "went", "goed", ["home", "to school", "to the market", "to bed early"]),
    ("eat", "ate", "eated", ["an apple", "the whole cake", "a sandwich", "some soup"]),
    ("see", "saw", "seed", ["a bird", "the movie", "a big dog"]),
    ("take", "took", "taked", ["the bus", "a photo", "the last cookie"]),
    ("run", "ran", "runned", ["to the park", "home", "very fast"]),
    ("write", "wrote", "writed", ["a letter", "a short story", "a poem"]),
    ("come", "came", "comed", ["home late", "to the party", "back early"]),
    ("give", "gave", "gived", ["her a book", "the dog some food", "the teacher a present"]),
    ("drink", "drank", "drinked", ["some water", "a cup of tea", "the milk"]),
    ("swim", "swam", "swimmed", ["in the lake", "across the river", "in the sea"]),
    ("begin", "began", "beginned", ["a new book", "the lesson", "to cry"]),
    ("buy", "bought", "buyed", ["a new bike", "some bread", "a red hat"]),
    ("bring", "brought", "bringed", ["a cake", "some flowers", "the tickets"]),
    ("think", "thought", "thinked", ["about the problem", "about the trip"]),
    ("catch", "caught", "catched", ["a big fish", "the ball", "the early train"]),
    ("teach", "taught", "teached", ["the class", "a new song", "the little ones to read"]),
    ("find", "found", "finded", ["the keys", "a coin", "a small cat"]),
    ("sell", "sold", "selled", ["the old car", "some apples", "the house"]),
    ("tell", "told", "telled", ["a funny story", "the truth", "a joke"]),
    ("make", "made", "maked", ["a cake", "a big mistake", "dinner"]),
    ("break", "broke", "breaked", ["a window", "the glass", "the rules"]),
    ("speak", "spoke", "speaked", ["to the teacher", "very quietly", "to the class"]),
    ("steal", "stole", "stealed", ["a cookie", "the money", "an apple"]),
    ("choose", "chose", "choosed", ["the red one", "a book", "the blue hat"]),
    ("drive", "drove", "drived", ["to work", "the car", "to the beach"]),
    ("ride", "rode", "rided", ["a horse", "the bike", "the bus to school"]),
    ("draw", "drew", "drawed", ["a picture", "a map", "a cat"]),
    ("grow", "grew", "growed", ["tomatoes", "some flowers", "very tall"]),
    ("throw", "threw", "throwed", ["the ball", "a stone", "the letter away"]),
    ("know", "knew", "knowed", ["the answer", "the way home", "everyone there"]),
    ("blow", "blew", "blowed", ["out the candles", "a big bubble", "the whistle"]),
    ("fall", "fell", "falled", ["off the bike", "down the stairs", "asleep"]),
    ("hold", "held", "holded", ["the baby", "the door open", "the bag"]),
    ("stand", "stood", "standed", ["by the door", "in the rain", "near the window"]),
    ("sit", "sat", "sitted", ["on the bench", "by the fire", "in the front row"]),
    ("forget", "forgot", "forgetted", ["the keys", "the tickets", "the answer"]),
    ("get", "got", "getted", ["a letter", "a new job", "lost in the city"]),
    ("win", "won", "winned", ["the race", "the game", "a prize"]),
    ("lose", "lost", "losed", ["the keys", "the game", "a glove"]),
    ("meet", "met", "meeted", ["a friend", "the new teacher", "an old friend"]),
    ("feel", "felt", "feeled", ["very tired", "sick", "happy"]),
    ("keep", "kept", "keeped", ["the change", "a secret", "the old letters"]),
    ("sleep", "slept", "sleeped", ["for ten hours", "on the sofa", "very well"]),
    ("send", "sent", "sended", ["a letter", "an email", "a card"]),
    ("spend", "spent", "spended", ["all the money", "the day at home", "an hour in the garden"]),
    ("build", "built", "builded", ["a sandcastle", "a small boat", "a tree house"]),
    ("wear", "wore", "weared", ["a blue coat", "a hat", "the new shoes"]),
    ("hide", "hid", "hided", ["the money", "behind the door", "the present"]),
    ("shake", "shook", "shaked", ["the bottle", "the rug", "hands with the teacher"]),
    ("feed", "fed", "feeded", ["the cat", "the ducks", "the horses"]),
    ("do", "did", "doed", ["the homework", "the dishes", "a good job"]),
    ("say", "said", "sayed", ["hello", "goodbye", "nothing"]),
]

PAST_TIMES = ["Yesterday", "Last night", "Last week", "This morning", "Two days ago",
              "Last summer", "On Monday", "After dinner"]
PAST_SUBJECTS = ["the boy", "the girl", "my sister", "my brother", "our teacher",
                 "the old man", "Tom", "Anna", "my friend", "the children", "we", "I"]


def make_past(rng: random.Random):
    _, past, wrong, objects = rng.choice(PAST_VERBS)
    time = rng.choice(PAST_TIMES + [""])
    subject = rng.choice(PAST_SUBJECTS)
    if time:
        context = f"{time} {subject}"
    else:
        context = subject[0].upper() + subject[1:]
    tail = f" {rng.choice(objects)}."
    return context, " " + past + tail, " " + wrong + tail


# --------------------------------------------------------------------------
# Irregular plurals
# --------------------------------------------------------------------------

NUMBERS = ["two", "three", "four", "five", "six", "many", "several", "a few"]
GENERIC_FRAMES = ["There were {n}", "I saw {n}", "We saw {n}", "She counted {n}",
                  "There are {n}"]

# (singular, plural, regularised wrong plural, adjectives, tails, frames or None for
# generic). A frame is a string, or (string, tails) when it needs its own tails.
PLURALS = [
    ("child", "children", "childs", ["young", "small", "happy"],
     ["in the park", "at the party", "in the classroom", "on the bus"], None),
    ("man", "men", "mans", ["tall", "old", "young"],
     ["at the door", "in the office", "on the bus", "in the street"], None),
    ("woman", "women", "womans", ["tall", "old", "young"],
     ["at the door", "in the office", "in the garden", "on the bus"], None),
    ("policeman", "policemen", "policemans", ["tall", "young"],
     ["at the door", "in the street", "near the bank"], None),
    ("fireman", "firemen", "firemans", ["brave", "tired"],
     ["at the station", "near the house", "in the street"], None),
    ("mouse", "mice", "mouses", ["little", "grey", "small"],
     ["in the barn", "in the kitchen", "under the bed"],
     GENERIC_FRAMES + ["The cat caught {n}"]),
    ("goose", "geese", "gooses", ["white", "big", "noisy"],
     ["on the lake", "in the field", "near the pond"], None),
    ("wolf", "wolves", "wolfs", ["grey", "hungry", "big"],
     ["in the forest", "near the village", "on the hill"], None),
    ("sheep", "sheep", "sheeps", ["white", "black", "young"],
     ["in the field", "on the hill", "near the barn"], None),
    ("deer", "deer", "deers", ["young", "small", "shy"],
     ["in the forest", "near the road", "in the field"], None),
    ("thief", "thieves", "thiefs", ["young", "clever"],
     ["in the bank", "last night", "near the station"],
     ["There were {n}", "The police caught {n}", "We saw {n}"]),
    ("tooth", "teeth", "tooths", ["front", "baby", "white"],
     ["already"],
     [("The little boy has lost {n}", ["this year", "already"]),
      ("The dentist pulled out {n}", ["last month", "yesterday"]),
      ("The baby has {n}", ["already", "now"])]),
    ("foot", "feet", "foots", ["cold", "bare", "sore"],
     ["after the walk", "in the cold water", "on the carpet"],
     ["The hikers rested their", "The children washed their",
      "The dancers hurt their"]),
    ("knife", "knives", "knifes", ["sharp", "clean", "old"],
     ["on the table", "in the drawer", "for the kitchen"],
     ["There were {n}", "We bought {n}", "She washed {n}"]),
    ("leaf", "leaves", "leafs", ["yellow", "dry", "green"],
     ["on the ground", "on the path", "in the garden"],
     ["There were {n}", "I saw {n}", "The wind blew {n}"]),
    ("shelf", "shelves", "shelfs", ["empty", "wooden", "long"],
     ["in the cupboard", "full of books", "in the kitchen"],
     ["There were {n}", "The room has {n}", "We built {n}"]),
    ("loaf", "loaves", "loafs", ["fresh", "warm", "small"],
     ["of bread", "of bread for the party", "of bread this morning"],
     ["She baked {n}", "We bought {n}", "There were {n}"]),
]


def make_plural(rng: random.Random):
    _, good, wrong, adjs, tails, frames = rng.choice(PLURALS)
    frame = rng.choice(frames or GENERIC_FRAMES)
    if isinstance(frame, tuple):
        frame, tails = frame
    context = frame.format(n=rng.choice(NUMBERS))
    context = context[0].upper() + context[1:]
    if rng.random() < 0.4:
        context += " " + rng.choice(adjs)
    tail = f" {rng.choice(tails)}."
    return context, " " + good + tail, " " + wrong + tail


# --------------------------------------------------------------------------
# Comparatives and superlatives
# --------------------------------------------------------------------------

IRREGULAR_ADJ = {"good": ("better", "best", "gooder", "goodest"),
                 "bad": ("worse", "worst", "badder", "baddest")}
DOUBLE_FINAL = {"big", "hot", "thin", "sad", "wet", "fat", "red"}

# Adjectives whose two comparative forms are both acceptable (clever, narrow,
# simple, quiet, friendly, polite, common, gentle, healthy, kind, ...) are left out.
COMP_GROUPS = {
    "box": {
        "nouns": ["box", "bag", "suitcase", "basket"],
        "short": ["big", "small", "heavy", "light", "cheap", "large", "strong", "old", "new"],
        "long": ["expensive", "useful", "beautiful", "colorful"],
        "subjects": ["This {noun} is", "Your {noun} is", "The new {noun} is", "Her {noun} is"],
        "comp_tails": ["that one", "the old one", "mine", "the other one"],
        "sup_subjects": ["This is the", "That is the", "It was the"],
        "sup_tails": ["in the shop", "in the room", "we have"],
    },
    "house": {
        "nouns": ["house", "hotel", "building", "apartment"],
        "short": ["big", "small", "tall", "old", "new", "cheap", "warm", "cold", "clean",
                  "dark", "large", "nice"],
        "long": ["expensive", "beautiful", "comfortable", "modern", "famous", "popular"],
        "subjects": ["This {noun} is", "Their {noun} is", "The new {noun} is", "Your {noun} is"],
        "comp_tails": ["that one", "the old one", "ours", "the other one"],
        "sup_subjects": ["This is the", "That is the", "It was the"],
        "sup_tails": ["in the street", "in the town", "in the city"],
    },
    "vehicle": {
        "nouns": ["car", "bike", "train", "boat"],
        "short": ["fast", "slow", "big", "small", "old", "new", "cheap", "loud", "clean"],
        "long": ["expensive", "comfortable", "dangerous", "modern", "popular", "reliable"],
        "subjects": ["This {noun} is", "Your {noun} is", "The new {noun} is", "His {noun} is"],
        "comp_tails": ["that one", "the old one", "mine", "the other one"],
        "sup_subjects": ["This is the", "That is the", "It was the"],
        "sup_tails": ["in the shop", "in the town", "we have ever had"],
    },
    "road": {
        "nouns": ["road", "river", "bridge", "path"],
        "short": ["long", "short", "wide", "busy", "old"],
        "long": ["dangerous", "famous", "beautiful"],
        "subjects": ["This {noun} is", "The new {noun} is", "The old {noun} is"],
        "comp_tails": ["that one", "the other one", "we thought"],
        "sup_subjects": ["This is the", "That is the", "It is the"],
        "sup_tails": ["in the country", "in the region", "in the city"],
    },
    "person": {
        "nouns": ["student", "player", "child"],
        "short": ["tall", "short", "young", "old", "strong", "happy", "busy", "funny",
                  "rich", "fast"],
        "long": ["careful", "famous", "popular", "patient", "helpful"],
        "subjects": ["Tom is", "Anna is", "My sister is", "My brother is",
                     "The new student is"],
        "comp_tails": ["the others", "everyone else", "me", "the other students"],
        "sup_subjects": ["Tom is the", "Anna is the", "She is the", "He is the"],
        "sup_tails": ["in the class", "in the school", "on the team"],
    },
    "story": {
        "nouns": ["book", "film", "story", "game"],
        "short": ["long", "short", "funny", "old", "new", "easy", "sad"],
        "long": ["interesting", "boring", "exciting", "popular", "famous", "important",
                 "difficult"],
        "subjects": ["This {noun} is", "The new {noun} is", "His {noun} is", "Her {noun} is"],
        "comp_tails": ["that one", "the first one", "the other one", "the last one"],
        "sup_subjects": ["This is the", "That is the", "It was the"],
        "sup_tails": ["in the library", "of the year", "on the list"],
    },
    "food": {
        "nouns": ["cake", "pie", "apple", "melon"],
        "short": ["sweet", "fresh", "cheap", "big", "small", "nice"],
        "long": ["delicious", "expensive", "popular"],
        "subjects": ["This {noun} is", "Your {noun} is", "The new {noun} is", "Her {noun} is"],
        "comp_tails": ["that one", "the other one", "mine", "the last one"],
        "sup_subjects": ["This is the", "That is the", "It was the"],
        "sup_tails": ["in the shop", "on the menu", "at the market"],
    },
}


def _suffix(adj: str, suffix: str) -> str:
    if adj in DOUBLE_FINAL:
        return adj + adj[-1] + suffix
    if adj.endswith("e"):
        return adj + suffix[1:]
    if adj.endswith("y") and adj[-2] not in "aeiou":
        return adj[:-1] + "i" + suffix
    return adj + suffix


def comparative_pair(adj: str, kind: str, superlative: bool) -> tuple[str, str]:
    """Return (correct, wrong) forms."""
    if kind == "irregular":
        comp, sup, wrong_comp, wrong_sup = IRREGULAR_ADJ[adj]
        return (sup, wrong_sup) if superlative else (comp, wrong_comp)
    inflected = _suffix(adj, "est" if superlative else "er")
    periphrastic = ("most " if superlative else "more ") + adj
    if kind == "short":
        return inflected, periphrastic
    # Long adjectives: the periphrastic form is correct, the inflected one is wrong.
    return periphrastic, _suffix(adj, "est" if superlative else "er")


# Sub-kinds cycled within the phenomenon: short adjectives get half the items.
COMP_KINDS = [("short", False), ("short", True), ("long", False), ("short", False),
              ("irregular", False), ("short", True), ("long", True), ("irregular", True)]


def make_comparative(rng: random.Random, index: int):
    kind, superlative = COMP_KINDS[index % len(COMP_KINDS)]
    group = COMP_GROUPS[rng.choice(sorted(COMP_GROUPS))]
    adj = rng.choice(sorted(IRREGULAR_ADJ)) if kind == "irregular" else rng.choice(group[kind])
    good, bad = comparative_pair(adj, kind, superlative)
    noun = rng.choice(group["nouns"])
    if adj in ("old", "new") and not superlative:
        return None  # avoid "The new car is newer than the old one"
    if superlative:
        context = rng.choice(group["sup_subjects"])
        tail = f" {noun} {rng.choice(group['sup_tails'])}."
    else:
        context = rng.choice(group["subjects"]).format(noun=noun)
        tail = f" than {rng.choice(group['comp_tails'])}."
    return context, " " + good + tail, " " + bad + tail, f"{kind}_{'sup' if superlative else 'comp'}"


# --------------------------------------------------------------------------
# Assembly
# --------------------------------------------------------------------------


def build_one(rng: random.Random, phenomenon: str, index: int):
    """Return (context, correct, wrong, subtype)."""
    if phenomenon == "a_an":
        vowel = index % 2 == 0
        return (*make_a_an(rng, vowel), "an" if vowel else "a")
    if phenomenon == "irregular_past":
        return (*make_past(rng), "past")
    if phenomenon == "irregular_plural":
        return (*make_plural(rng), "plural")
    if phenomenon == "comparative":
        return make_comparative(rng, index)
    raise ValueError(phenomenon)


def generate(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    items: list[dict] = []
    seen: set[tuple] = set()
    for phenomenon, count in COUNTS.items():
        labels = [0, 1] * (count // 2)
        rng.shuffle(labels)  # exactly half the correct answers come first
        made = 0
        attempts = 0
        while made < count:
            attempts += 1
            if attempts > count * 200:
                raise RuntimeError(f"could not make {count} unique {phenomenon} items")
            built = build_one(rng, phenomenon, made)
            if built is None:
                continue
            context, good, bad, _ = built
            key = (context, tuple(sorted((good, bad))))
            if key in seen:
                continue
            seen.add(key)
            label = labels[made]
            choices = [good, bad] if label == 0 else [bad, good]
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
