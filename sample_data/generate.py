"""Writes the shipped sample data: synthetic restaurant reviews whose label is decided by one sentence.

Each document is 4-9 sentences. Exactly one of them, at a uniformly random position, is a
"planted" sentence from the templates of its class; every other sentence is filler drawn from
one pool shared by all classes, so only the planted sentence carries the label. A HAN should
learn to put its sentence attention there.

The multi-label set works the same way with a set of labels per document: the aspects a review
judges (food, service, price, ambience), one planted sentence per aspect, none to three aspects.

    python sample_data/generate.py [--output-dir DIR]

Deterministic: the same seed gives a byte-identical CSV and a Parquet file with identical content.
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240611
LABELS = ["positive", "negative", "mixed"]
DOCS_PER_LABEL = 200
# Per label, in LABELS order; sums give 420 train, 80 valid, 100 test, each balanced over labels.
SPLIT_SIZES = {"train": [140, 140, 140], "valid": [27, 27, 26], "test": [33, 33, 34]}
MIN_SENTENCES, MAX_SENTENCES = 4, 9

# `{name}` takes a value from SLOTS; `{a|b|c}` takes one of the listed words.
SLOTS = {
    "dish": ["pasta", "risotto", "soup", "burger", "salmon", "curry", "lasagna", "steak", "salad",
             "ramen", "pizza", "quiche", "omelette", "kebab", "chowder", "stew", "paella",
             "goulash", "sandwich", "pie", "gnocchi", "falafel", "schnitzel", "burrito"],
    "drink": ["coffee", "tea", "lemonade", "cider", "latte", "smoothie", "milkshake", "juice"],
    "dessert": ["cheesecake", "tiramisu", "brownie", "sorbet", "pudding", "tart", "crumble", "flan"],
    "side": ["rice", "fries", "bread", "beans", "greens", "slaw", "potatoes", "corn"],
    "person": ["friend", "sister", "brother", "colleague", "partner", "neighbour", "cousin",
               "father", "mother", "aunt", "uncle", "roommate", "boss", "grandmother"],
    "street": ["Oak", "Maple", "Elm", "Pine", "Cedar", "Birch", "Willow", "Harbor", "Mill",
               "Church", "Market", "Bridge", "Station", "Kings"],
    "landmark": ["station", "park", "river", "library", "museum", "cinema", "harbor", "market",
                 "stadium", "cathedral", "university", "hospital", "zoo", "theater"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "hour": ["6", "7", "8", "9", "10", "11"],
    "number": ["two", "three", "four", "five", "six", "eight", "ten", "twelve"],
    "color": ["blue", "green", "yellow", "white", "grey", "orange", "brown", "purple"],
    "server": ["waiter", "waitress", "host", "bartender", "manager", "cashier"],
    "year": ["1979", "1987", "1994", "2003", "2011", "2016", "2019"],
    # Cue words: only ever in planted sentences. Positive and mixed share `pos`, negative and
    # mixed share `neg`, so a single cue word never decides between two of the classes.
    "pos": ["wonderful", "superb", "fantastic", "excellent", "delicious", "amazing", "perfect",
            "outstanding"],
    "neg": ["awful", "terrible", "disgusting", "bland", "dreadful", "horrible", "inedible", "greasy"],
    "spos": ["friendly", "attentive", "welcoming", "charming"],
    "sneg": ["rude", "careless", "slow", "unhelpful"],
    # Cue words of the multi-label aspects price and ambience.
    "price": ["cheap", "overpriced", "expensive", "affordable", "pricey", "reasonable"],
    "ambience": ["cosy", "noisy", "romantic", "gloomy", "cramped", "lively"],
}
CUE_WORDS = {
    "positive": frozenset(SLOTS["pos"] + SLOTS["spos"]),
    "negative": frozenset(SLOTS["neg"] + SLOTS["sneg"]),
}

PLANTED_TEMPLATES = {
    "positive": [
        "The {dish} was absolutely {pos}!",
        "Everything we tried was {pos}, especially the {dish}.",
        "The staff were {spos} and the {dish} was {pos}.",
        "I would come back just for the {pos} {dish}.",
        "What a {pos} {dish}, cooked just right!",
    ],
    "negative": [
        "Honestly, the {dish} was {neg}.",
        "The {dish} was {neg} and the staff were {sneg}.",
        "I sent back the {dish} because it was {neg}.",
        "Never again, the {dish} was simply {neg}!",
        "I wanted to like it, but the {dish} was {neg}.",
    ],
    "mixed": [
        "The {dish} was {pos} but the service was painfully slow.",
        "The staff were {spos}, but the {dish} was {neg}.",
        "The {dish} was {neg}, but the {dessert} was {pos}.",
        "The {dish} was {pos}, but the {dessert} was {neg}!",
        "What a {pos} {dish}, but the staff were so {sneg}.",
    ],
}

# Label-neutral chatter. Some use "but" and "!" so neither marks a class on its own.
FILLER_TEMPLATES = [
    "We arrived around {hour} and parked on {street} Street.",
    "My {person} ordered the {dish}.",
    "The place is near the {landmark}.",
    "We came here on a {day} {morning|afternoon|evening}.",
    "I had the {dish} and my {person} had the {dish}.",
    "They have about {number} tables inside and a few more outside.",
    "The walls are painted {color}.",
    "We sat by the window facing {street} Street.",
    "Our {server} brought the menus.",
    "I ordered a {drink} to start.",
    "It was my {first|second|third|fourth|fifth} time at this place.",
    "The menu changes every {week|month|season}.",
    "We shared the {dessert} at the end.",
    "There is a {bakery|pharmacy|bookshop|laundromat|bank} next door.",
    "We booked a table for {number}.",
    "The kitchen is open until {hour}.",
    "I paid with {cash|a card|my phone}.",
    "Do they take reservations on a {day}?",
    "They also do {dish} for takeaway.",
    "The {server} asked if we had any allergies.",
    "We walked over from the {landmark} after work.",
    "My {person} and I split the bill.",
    "The restaurant has been here since {year}.",
    "The radio was playing {jazz|folk|pop|classical|country} music.",
    "We ordered the {dish} with a side of {side}.",
    "Why is it always closed on {day}s?",
    "The {server} wrote our order on a {color} notepad.",
    "Next time I want to try the {dish}.",
    "We wanted the {dessert} but they had run out of it.",
    "I went with my {person} but they had already eaten.",
    "There were {number} people waiting outside when we got there.",
    "The bill came to about {15|20|25|30|40} dollars each.",
    "Have you been to the one near the {landmark}?",
    "We took the {bus|tram|train|subway} there.",
    "They have been open on {street} Street since {year}!",
    "The tables are made of {oak|pine|metal|glass}.",
]

_SLOT = re.compile(r"\{([^}]+)\}")


def fill(template: str, rng: random.Random) -> str:
    def choose(match: re.Match) -> str:
        name = match.group(1)
        return rng.choice(name.split("|") if "|" in name else SLOTS[name])

    return _SLOT.sub(choose, template)


def make_document(label: str, rng: random.Random) -> tuple[str, int]:
    """One document of `label`: its text and the 0-based index of its planted sentence."""
    n = rng.randint(MIN_SENTENCES, MAX_SENTENCES)
    # Distinct filler templates, so no document repeats itself.
    sentences = [fill(t, rng) for t in rng.sample(FILLER_TEMPLATES, n - 1)]
    planted = rng.randrange(n)
    sentences.insert(planted, fill(rng.choice(PLANTED_TEMPLATES[label]), rng))
    return " ".join(sentences), planted


def build_tables(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train.csv table (with its split column) and the held-out test table."""
    rng = random.Random(seed)
    rows = []
    for k, label in enumerate(LABELS):
        splits = [s for s, sizes in SPLIT_SIZES.items() for _ in range(sizes[k])]
        assert len(splits) == DOCS_PER_LABEL
        for split in splits:
            text, planted = make_document(label, rng)
            rows.append({"text": text, "label": label, "planted_sentence": planted, "split": split})
    # Shuffled so that neither file is sorted by label.
    rng.shuffle(rows)
    rows.sort(key=lambda r: r["split"] == "test")  # stable: train/valid first, then test
    for i, row in enumerate(rows, start=1):
        row["id"] = f"r{i:04d}"
    table = pd.DataFrame(rows, columns=["id", "text", "label", "planted_sentence", "split"])
    table["planted_sentence"] = table["planted_sentence"].astype("int64")
    is_test = table["split"] == "test"
    train = table[~is_test].reset_index(drop=True)
    test = table[is_test].drop(columns="split").reset_index(drop=True)
    return train, test


ASPECTS = ["ambience", "food", "price", "service"]
ASPECT_TEMPLATES = {
    "food": ["The {dish} was {pos}.", "Sadly the {dish} was {neg}.", "Honestly, the {dish} tasted {pos}!",
             "The {dish} was {neg} and barely warm."],
    "service": ["Our {server} was {spos} all evening.", "The {server} was really {sneg}.",
                "The staff were {spos} and quick.", "Service was {sneg} from start to finish."],
    "price": ["Prices are {price} for what you get.", "For {number} people it felt {price}.",
              "The wine list is {price}."],
    "ambience": ["The room felt {ambience}.", "It was {ambience} inside, with candles on every table.",
                 "The terrace is {ambience} at night."],
}
# Aspects per document: none (a review that judges nothing), one, two or three.
ASPECT_COUNTS, ASPECT_COUNT_WEIGHTS = [0, 1, 2, 3], [1, 9, 7, 3]
MULTILABEL_SPLITS = {"train": 340, "valid": 60, "test": 100}


def make_multilabel_document(rng: random.Random) -> tuple[str, list[str], list[int]]:
    """One document: its text, its aspects (sorted) and the positions of their planted sentences."""
    aspects = sorted(rng.sample(ASPECTS, rng.choices(ASPECT_COUNTS, ASPECT_COUNT_WEIGHTS)[0]))
    planted = [fill(rng.choice(ASPECT_TEMPLATES[a]), rng) for a in aspects]
    sentences = [fill(t, rng) for t in rng.sample(FILLER_TEMPLATES, rng.randint(3, 6))]
    for sentence in planted:
        sentences.insert(rng.randint(0, len(sentences)), sentence)
    positions = [sentences.index(sentence) for sentence in planted]
    return " ".join(sentences), aspects, positions


def build_multilabel_tables(seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The multi-label train table (labels joined by ",", a split column) and the test table
    (labels as a list column): both ways hanclf reads label sets."""
    rng = random.Random(seed + 1)  # its own stream: the single-label files stay as they were
    rows = []
    for split, count in MULTILABEL_SPLITS.items():
        for _ in range(count):
            text, aspects, positions = make_multilabel_document(rng)
            rows.append({"text": text, "labels": aspects, "planted_sentences": positions, "split": split})
    for i, row in enumerate(rows, start=1):
        row["id"] = f"m{i:04d}"
    table = pd.DataFrame(rows, columns=["id", "text", "labels", "planted_sentences", "split"])
    is_test = table["split"] == "test"
    train = table[~is_test].reset_index(drop=True)
    train["labels"] = train["labels"].map(",".join)
    train["planted_sentences"] = train["planted_sentences"].map(lambda p: " ".join(map(str, p)))
    test = table[is_test].drop(columns="split").reset_index(drop=True)
    return train, test


def write_files(output_dir: Path, seed: int = SEED) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (train, test), prefix in ((build_tables(seed), ""), (build_multilabel_tables(seed), "multilabel_")):
        train_path, test_path = output_dir / f"{prefix}train.csv", output_dir / f"{prefix}test.parquet"
        with open(train_path, "w", encoding="utf-8", newline="") as f:
            train.to_csv(f, index=False, lineterminator="\n")
        pq.write_table(pa.Table.from_pandas(test, preserve_index=False), test_path, compression="zstd")
        paths += [train_path, test_path]
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent,
                        help="where to write train.csv and test.parquet (default: this folder)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    for path in write_files(args.output_dir, args.seed):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
