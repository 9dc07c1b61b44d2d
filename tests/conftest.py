"""Shared fixtures: small labelled data made here, and one small model trained on it once."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hanclf.config import load_config
from hanclf.tokenize import tokenize
from hanclf.training import train

FILLER = [
    "We went there on a Sunday.", "The parking was easy to find.", "My friend ordered the soup.",
    "It was a busy evening.", "The menu has many options.", "They open at nine.",
]
CUES = {"pos": "The food was wonderful!", "neg": "The food was awful.", "mix": "Great food but slow."}


def make_reviews(n: int, seed: int = 0) -> pd.DataFrame:
    """Documents of filler sentences plus one cue sentence that decides the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = list(CUES)[i % 3]
        sentences = rng.sample(FILLER, 3)
        sentences.insert(rng.randint(0, 3), CUES[label])
        rows.append({"id": f"d{i:04d}", "text": " ".join(sentences), "label": label})
    return pd.DataFrame(rows)


def with_bidirectional_names(state: dict) -> dict:
    """`state` under the names hanclf saved before 951bbbb, when each encoder held one
    nn.GRU(bidirectional=True): `...forward_gru.weight_ih_l0` as `...gru.weight_ih_l0`,
    `...backward_gru.weight_ih_l0` as `...gru.weight_ih_l0_reverse` (model.py's
    renamed_bidirectional_weights goes the other way)."""
    old = {}
    for name, value in state.items():
        if "backward_gru." in name:
            name = name.replace("backward_gru.", "gru.") + "_reverse"
        old[name.replace("forward_gru.", "gru.")] = value
    return old


def words_past_the_caps(texts: list[str | None], max_sentences: int, max_words: int) -> tuple[int, int, int]:
    """(documents cut, words, words unread) of `texts` under the caps, counted on their tokens."""
    cut = words = unread = 0
    for doc in map(tokenize, texts):
        total = sum(map(len, doc))
        read = sum(min(len(sentence), max_words) for sentence in doc[:max_sentences])
        cut, words, unread = cut + (read < total), words + total, unread + total - read
    return cut, words, unread


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_reviews(240).to_csv(root / "train.csv", index=False)
    make_reviews(60, seed=1).to_parquet(root / "test.parquet", index=False)
    return root


@pytest.fixture(scope="session")
def model_dir(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    config = load_config(None, {
        "model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8,
        "model.word_att_dim": 8, "model.sent_att_dim": 8, "train.max_epochs": 6,
        "train.lr": 0.01, "train.accelerator": "cpu", "data.min_count": 1,
    })
    train(data_dir / "train.csv", out, config, progress=False)
    return out


@pytest.fixture(scope="session")
def capped_model_dir(model_dir, tmp_path_factory) -> Path:
    """The tiny model reading 3 sentences of 4 words at most: the caps choose what it reads,
    and its weights do not depend on them."""
    out = tmp_path_factory.mktemp("models") / "capped"
    shutil.copytree(model_dir, out)
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    config["data"].update(max_sentences=3, max_words=4)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture(scope="session")
def sample_model_dir(tmp_path_factory) -> Path:
    """A small HAN trained on the shipped sample data (planted deciding sentences)."""
    out = tmp_path_factory.mktemp("models") / "sample"
    config = load_config(None, {
        "model.embed_dim": 32, "model.word_hidden": 16, "model.sent_hidden": 16,
        "model.word_att_dim": 16, "model.sent_att_dim": 16, "train.lr": 0.02,
        "train.max_epochs": 12, "train.accelerator": "cpu",
    })
    train(SAMPLE_DATA / "train.csv", out, config, progress=False)
    return out
