"""Notes on training labels that look wrong: hanclf takes labels as written, so a typo, a
missing value written as a word, a repeated header row or a set of labels read as one label
each became a class of its own without a word."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hanclf.config import DataConfig, load_config
from hanclf.training import label_notes, train
from hanclf.vocab import Labels


def notes_for(values: list[str], **data) -> list[str]:
    labels = Labels.build(values)
    return label_notes(labels, labels.ids(values, "d.csv"), DataConfig(**data))


def test_clean_labels_get_no_note():
    assert notes_for(["billing"] * 50 + ["bug"] * 30 + ["account"] * 3) == []


def test_rare_labels_missing_words_and_a_repeated_header():
    values = ["billing"] * 60 + ["bug"] * 30 + ["biling", "category", "NA", "NA", "NA"]
    notes = notes_for(values, label_column="category")
    assert notes == [
        "labels on 2 training rows or fewer: biling (1), category (1); a typo, or a stray row?",
        "label(s) 'NA' read as labels, not as missing values; drop those rows if they have no label",
        "label 'category' is the label column's own name: a header row repeated inside the data (files joined)?",
    ]
    # A small data set has few rows of every label: no note on rarity there.
    assert notes_for(["a", "b", "c", "d"]) == []


def test_no_false_alarms_on_signs_and_for_multi_label_no_label():
    assert notes_for(["+"] * 30 + ["-"] * 30 + ["0"] * 30 + ["?"] * 30) == []
    tags = Labels.build(["food", "none"], multi_label=True)
    targets = [np.array(row, np.float32) for row in np.eye(2)[[0, 1] * 20]]
    assert label_notes(tags, targets, DataConfig(multi_label=True)) == [
        "label(s) 'none' read as labels, not as missing values; leave the cell empty for a "
        "document with no label"]


def test_sets_of_labels_read_as_single_labels():
    values = ["billing"] * 40 + ["bug;billing"] * 5 + ["account;bug"] * 5
    assert notes_for(values) == [
        "2 labels hold ';' ('account;bug', 'bug;billing'): if they are sets of labels, train with "
        "--multi-label --label-separator ';'"]
    assert notes_for(["a"] * 20 + ["a, b"] * 5 + ["b, c"] * 5)[0].endswith("train with --multi-label")
    # With data.label_separator ';', sets joined by ',' need the separator named.
    assert notes_for(["a, b"] * 30 + ["c, d"] * 30, label_separator=";")[0].endswith(
        "train with --multi-label --label-separator ','")
    tags = Labels.build(["food", "bug|billing", "account|bug"], multi_label=True)
    targets = [np.array(row, np.float32) for row in np.eye(3)[[0, 1, 2] * 10]]
    assert label_notes(tags, targets, DataConfig(multi_label=True)) == [
        "2 labels hold '|' ('account|bug', 'bug|billing'): if they are sets of labels, train with "
        "--label-separator '|'"]


def train_log(tmp_path, rows: list[dict], settings: dict) -> list[str]:
    """The lines train logs for `rows`, a tiny model trained one epoch with `settings`."""
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    config = load_config(None, {"model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4,
                                "train.max_epochs": 1, "train.accelerator": "cpu", **settings})
    lines: list[str] = []
    train(tmp_path / "d.csv", tmp_path / "m", config, progress=False, log=lines.append)
    return lines


def test_train_logs_the_notes(tmp_path):
    rows = [{"text": f"The order {i} was {'late' if i % 2 else 'fine'}.", "label": "late" if i % 2 else "fine"}
            for i in range(60)]
    rows.append({"text": "The order was lost.", "label": "lsot"})
    lines = train_log(tmp_path, rows, {"data.valid_fraction": 0.2})
    assert "note: labels on 2 training rows or fewer: lsot (1); a typo, or a stray row?" in lines
    assert [line for line in lines if line.startswith("note:")] == [  # one model: no ensemble note
        "note: labels on 2 training rows or fewer: lsot (1); a typo, or a stray row?"]


def test_train_notes_documents_the_caps_leave_mostly_unread(tmp_path):
    """Long tickets whose words mostly lie past max_sentences x max_words: train says how much
    the model never reads, and where to change it; short documents get no such note."""
    rows = [{"text": " ".join(["The order was late."] * 5 + ["More words here in a sentence of many words."] * 4)
             if i % 2 else "The order was fine.", "label": "late" if i % 2 else "fine"} for i in range(40)]
    lines = train_log(tmp_path, rows, {"data.valid_fraction": 0.25, "data.max_sentences": 3, "data.max_words": 3})
    # 15 long training documents of 5 x 5 + 4 x 10 = 65 tokens (9 read) and 15 short ones of
    # 5 (3 read): (15 * 56 + 15 * 2) / (15 * 65 + 15 * 5) = 870 / 1050 unread, in all 30.
    notes = [line for line in lines if "data.max_words" in line]
    assert notes == ["note: the model reads 3 sentences of 3 words at most (data.max_sentences, data.max_words): "
                     "83% of the training words are past them, in 30 of 30 documents; raise them where labels "
                     "may depend on what long documents say late"]


def test_train_notes_documents_left_without_words_once_cleaned(tmp_path):
    """Whitespace alone is refused as an empty text, but markup or invisible characters alone
    passed as text and trained as empty documents without a word."""
    rows = [{"text": ["<br /><br />", "\u200b", "&nbsp;"][i % 3] if i < 6 else f"Review number {i} was fine.",
             "label": "a" if i % 2 else "b", "split": "train" if i < 32 else "valid"} for i in range(40)]
    lines = train_log(tmp_path, rows, {})
    notes = [line for line in lines if "no words once cleaned" in line]
    assert notes == ["note: 6 of 32 training documents have no words once cleaned (markup or invisible "
                     "characters only, e.g. '<br />'): the model learns its biases from them; drop them "
                     "if they are mistakes (predict marks such rows empty_text)"]
