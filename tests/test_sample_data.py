"""The shipped sample data: regenerates identically, and has the structure the generator promises."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
SPLITTER = re.compile(r"(?<=[.!?]) (?=[A-Z])")


def _load_generator():
    spec = importlib.util.spec_from_file_location("sample_data_generate", SAMPLE_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _pattern(template: str) -> re.Pattern:
    """A full-match regex for every sentence the template can produce (written here, not taken
    from the generator, so a slot-filling bug there cannot hide itself)."""
    parts = re.split(r"(\{[^}]+\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            name = part[1:-1]
            options = name.split("|") if "|" in name else gen.SLOTS[name]
            out.append("(?:" + "|".join(re.escape(o) for o in options) + ")")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


FILLER = [(t, _pattern(t)) for t in gen.FILLER_TEMPLATES]
PLANTED = [(label, t, _pattern(t)) for label, ts in gen.PLANTED_TEMPLATES.items() for t in ts]


def _filler_template(sentence: str) -> str | None:
    matches = [t for t, p in FILLER if p.fullmatch(sentence)]
    assert len(matches) <= 1, f"{sentence!r} matches several filler templates: {matches}"
    return matches[0] if matches else None


def _planted_label(sentence: str) -> str | None:
    matches = [label for label, _, p in PLANTED if p.fullmatch(sentence)]
    assert len(set(matches)) <= 1, f"{sentence!r} matches planted templates of {matches}"
    return matches[0] if matches else None


@pytest.fixture(scope="module")
def train_csv() -> pd.DataFrame:
    return pd.read_csv(SAMPLE_DIR / "train.csv", dtype={"id": str, "text": str, "label": str, "split": str})


@pytest.fixture(scope="module")
def test_parquet() -> pd.DataFrame:
    return pd.read_parquet(SAMPLE_DIR / "test.parquet")


@pytest.fixture(scope="module")
def docs(train_csv, test_parquet) -> pd.DataFrame:
    return pd.concat([train_csv.drop(columns="split"), test_parquet], ignore_index=True)


def test_generator_reproduces_shipped_files(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SAMPLE_DIR / "generate.py"), "--output-dir", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    for prefix in ("", "multilabel_"):
        assert (tmp_path / f"{prefix}train.csv").read_bytes() == (SAMPLE_DIR / f"{prefix}train.csv").read_bytes()
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / f"{prefix}test.parquet"),
            pd.read_parquet(SAMPLE_DIR / f"{prefix}test.parquet"),
        )


def test_csv_format():
    raw = (SAMPLE_DIR / "train.csv").read_bytes()
    assert b"\r" not in raw
    assert raw.decode("utf-8").splitlines()[0] == "id,text,label,planted_sentence,split"


def test_columns_and_counts(train_csv, test_parquet):
    assert list(train_csv.columns) == ["id", "text", "label", "planted_sentence", "split"]
    assert list(test_parquet.columns) == ["id", "text", "label", "planted_sentence"]
    assert len(train_csv) == 500 and len(test_parquet) == 100
    assert train_csv["split"].value_counts().to_dict() == {"train": 420, "valid": 80}
    assert pd.api.types.is_integer_dtype(train_csv["planted_sentence"])
    assert pd.api.types.is_integer_dtype(test_parquet["planted_sentence"])
    splits = [train_csv[train_csv["split"] == s] for s in ("train", "valid")]
    for frame in (train_csv, test_parquet, *splits):
        counts = frame["label"].value_counts()
        assert sorted(counts.index) == sorted(gen.LABELS)
        assert counts.max() - counts.min() <= 2, counts.to_dict()


def test_ids_unique_across_files(train_csv, test_parquet):
    ids = list(train_csv["id"]) + list(test_parquet["id"])
    assert len(set(ids)) == 600
    assert all(re.fullmatch(r"r\d{4}", i) for i in ids)


def test_texts_unique(docs):
    assert docs["text"].nunique() == len(docs)


def test_every_document_has_exactly_one_planted_sentence(docs):
    for row in docs.itertuples():
        sentences = SPLITTER.split(row.text)
        assert 4 <= len(sentences) <= 9, row.id
        assert " ".join(sentences) == row.text
        for i, s in enumerate(sentences):
            assert s[0].isupper() and s[-1] in ".!?", (row.id, s)
            if i == row.planted_sentence:
                assert _planted_label(s) == row.label, (row.id, s)
                assert _filler_template(s) is None, (row.id, s)
            else:
                assert _planted_label(s) is None, (row.id, s)
                assert _filler_template(s) is not None, (row.id, s)


def test_cue_words_only_in_planted_sentences(docs):
    cues = gen.CUE_WORDS["positive"] | gen.CUE_WORDS["negative"]
    for row in docs.itertuples():
        for i, s in enumerate(SPLITTER.split(row.text)):
            words = set(re.findall(r"[a-z]+", s.lower()))
            if i != row.planted_sentence:
                assert not words & cues, (row.id, s)
                continue
            has_pos = bool(words & gen.CUE_WORDS["positive"])
            has_neg = bool(words & gen.CUE_WORDS["negative"])
            expected = {"positive": (True, False), "negative": (False, True), "mixed": (True, True)}
            assert (has_pos, has_neg) == expected[row.label], (row.id, s)


def test_filler_templates_are_label_neutral(docs):
    counts: dict[str, Counter] = {t: Counter() for t in gen.FILLER_TEMPLATES}
    for row in docs.itertuples():
        for i, s in enumerate(SPLITTER.split(row.text)):
            if i != row.planted_sentence:
                counts[_filler_template(s)][row.label] += 1
    assert len(gen.FILLER_TEMPLATES) >= 25
    for template, by_label in counts.items():
        total = sum(by_label.values())
        assert total >= 30, (template, total)
        assert max(by_label[label] for label in gen.LABELS) / total <= 0.5, (template, by_label)
        # Classes are balanced, so each should get a third; 13.8 is chi-square(2 df) at p=0.001.
        chi2 = sum((by_label[label] - total / 3) ** 2 / (total / 3) for label in gen.LABELS)
        assert chi2 < 13.8, (template, by_label, chi2)


def test_planted_position_is_spread(docs):
    lengths = docs["text"].map(lambda t: len(SPLITTER.split(t)))
    positions = docs.loc[lengths >= 4, "planted_sentence"]
    for p in range(4):
        assert (positions == p).mean() >= 0.10, p
    # Not always first either: the last sentence is planted in a fair share of documents too.
    assert ((docs["planted_sentence"] == lengths - 1).mean()) >= 0.10


def test_vocabulary_is_a_few_hundred_words(docs):
    vocab = {w for text in docs["text"] for w in re.findall(r"[a-z0-9]+", text.lower())}
    assert 200 <= len(vocab) <= 1000, len(vocab)


ASPECT_PLANTED = [(aspect, _pattern(t)) for aspect, ts in gen.ASPECT_TEMPLATES.items() for t in ts]


@pytest.fixture(scope="module")
def multilabel_docs() -> pd.DataFrame:
    """Both multi-label files with labels and planted positions as lists."""
    train = pd.read_csv(SAMPLE_DIR / "multilabel_train.csv", dtype=str, keep_default_na=False)
    assert list(train.columns) == ["id", "text", "labels", "planted_sentences", "split"]
    assert train["split"].value_counts().to_dict() == {"train": 340, "valid": 60}
    train["labels"] = train["labels"].map(lambda s: s.split(",") if s else [])
    train["planted_sentences"] = train["planted_sentences"].map(lambda s: [int(p) for p in s.split()])
    test = pd.read_parquet(SAMPLE_DIR / "multilabel_test.parquet")
    assert list(test.columns) == ["id", "text", "labels", "planted_sentences"] and len(test) == 100
    test["labels"] = test["labels"].map(list)
    test["planted_sentences"] = test["planted_sentences"].map(list)
    return pd.concat([train.drop(columns="split"), test], ignore_index=True)


def test_multilabel_planted_sentences_decide_the_labels(multilabel_docs):
    sizes = Counter()
    for row in multilabel_docs.itertuples():
        sentences = SPLITTER.split(row.text)
        assert row.labels == sorted(row.labels) and set(row.labels) <= set(gen.ASPECTS)
        assert len(row.planted_sentences) == len(row.labels)
        sizes[len(row.labels)] += 1
        planted = dict(zip(row.planted_sentences, row.labels))
        for i, sentence in enumerate(sentences):
            aspects = {a for a, p in ASPECT_PLANTED if p.fullmatch(sentence)}
            if i in planted:
                assert aspects == {planted[i]}, (row.id, sentence)
            else:
                assert not aspects and _filler_template(sentence) is not None, (row.id, sentence)
    # every size of label set occurs, the empty set included
    assert sorted(sizes) == [0, 1, 2, 3] and sizes[0] >= 10


def test_multilabel_cue_words_only_in_planted_sentences(multilabel_docs):
    cues = set(gen.SLOTS["price"] + gen.SLOTS["ambience"] + gen.SLOTS["pos"] + gen.SLOTS["neg"]
               + gen.SLOTS["spos"] + gen.SLOTS["sneg"])
    for row in multilabel_docs.itertuples():
        for i, sentence in enumerate(SPLITTER.split(row.text)):
            if i not in row.planted_sentences:
                assert not cues & set(re.findall(r"[a-z]+", sentence.lower())), (row.id, sentence)
