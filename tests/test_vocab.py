"""Vocab (word ids), Labels (class ids) and label normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hanclf.config import DataConfig
from hanclf.data import index_tokens, vocabulary
from hanclf.errors import UsageError
from hanclf.model import PAD, UNK
from hanclf.tokenize import TOKENIZER_VERSION
from hanclf.vocab import Labels, NotALabelSet, Vocab, normalize_label, normalize_label_set, normalize_labels

# counts: the 4, cat 3, sat 2, mat 2, on 2, a 1
DOCS = [
    [["the", "cat", "sat"], ["on", "the", "mat"]],
    [["the", "cat", "sat", "on", "the", "mat"]],
    [["a", "cat"]],
]


def build(docs: list[list[list[str]]], min_count: int, max_size: int, lowercase: bool) -> Vocab:
    """The vocabulary of `docs`, as train makes it."""
    config = DataConfig(min_count=min_count, max_vocab=max_size, lowercase=lowercase)
    return vocabulary([index_tokens(docs, config)], config)


def ids(vocab: Vocab, words: list[str]) -> list[int]:
    """The ids of one sentence of `words`, as the model is given them."""
    return index_tokens([[words]], DataConfig(lowercase=vocab.lowercase)).encoded(vocab)[0].ids.tolist()


def test_reserved_ids():
    vocab = Vocab(["x"], lowercase=True)
    assert (PAD, UNK) == (0, 1)
    assert vocab.words[:2] == ["<pad>", "<unk>"]
    assert ids(vocab, ["x"]) == [2]


def test_order_by_count_then_alphabetical():
    vocab = build(DOCS, min_count=1, max_size=100, lowercase=False)
    # ties (mat, on, sat: 2 each) in alphabetical order
    assert vocab.words == ["<pad>", "<unk>", "the", "cat", "mat", "on", "sat", "a"]
    assert len(vocab) == 8


def test_min_count():
    vocab = build(DOCS, min_count=2, max_size=100, lowercase=False)
    assert vocab.words[2:] == ["the", "cat", "mat", "on", "sat"]
    assert ids(vocab, ["a"]) == [UNK]
    assert build(DOCS, min_count=4, max_size=100, lowercase=False).words[2:] == ["the"]


def test_max_size_counts_pad_and_unk():
    vocab = build(DOCS, min_count=1, max_size=4, lowercase=False)
    assert len(vocab) == 4
    assert vocab.words == ["<pad>", "<unk>", "the", "cat"]
    assert len(build(DOCS, min_count=1, max_size=2, lowercase=False)) == 2


def test_lowercase_on_merges_counts_and_maps_any_case():
    docs = [[["The", "the", "THE", "Cat"]]]
    vocab = build(docs, min_count=2, max_size=10, lowercase=True)
    assert vocab.words[2:] == ["the"]  # 3 occurrences together; "cat" has only 1
    assert ids(vocab, ["tHe", "THE", "cat"]) == [2, 2, UNK]


def test_lowercase_off_keeps_case():
    docs = [[["The", "the", "the", "The"]]]
    vocab = build(docs, min_count=2, max_size=10, lowercase=False)
    assert vocab.words[2:] == ["The", "the"]
    assert ids(vocab, ["The", "the", "THE"]) == [2, 3, UNK]


def test_unknown_words_are_unk():
    vocab = build(DOCS, min_count=1, max_size=100, lowercase=True)
    assert ids(vocab, ["cat", "dog", "", "Cat"]) == [3, UNK, UNK, 3]


def test_vocab_json_round_trip():
    vocab = build(DOCS, min_count=1, max_size=100, lowercase=False)
    data = json.loads(json.dumps(vocab.to_json()))
    assert data == {"lowercase": False, "tokenizer": TOKENIZER_VERSION,
                    "words": ["the", "cat", "mat", "on", "sat", "a"]}
    again = Vocab.from_json(data)
    assert again.words == vocab.words and again.lowercase is False
    assert again.tokenizer == TOKENIZER_VERSION
    assert ids(again, ["sat", "The"]) == ids(vocab, ["sat", "The"]) == [6, UNK]


def test_numeric_labels_sort_numerically():
    labels = Labels.build(["2", "10", "1", "2", "-3"])
    assert labels.names == ["-3", "1", "2", "10"]
    assert labels.numeric
    assert labels.value("10") == 10 and type(labels.value("10")) is int
    assert labels.ids(["10", "1", "-3"], "f.csv") == [3, 1, 0]


@pytest.mark.parametrize("names", [
    ["01", "1", "2"],  # "01" and "1" would both be written back as 1
    ["007", "8"],  # a code with leading zeros is text
    ["1", "\u00b2"],  # a superscript two is a digit to str.isdigit, not to int()
    ["1", "99999999999999999999"],  # past int64: pred_label could not hold it
    ["-0", "1"],
])
def test_labels_that_do_not_round_trip_as_integers_stay_text(names):
    labels = Labels.build(names)
    assert not labels.numeric
    assert [labels.value(n) for n in labels.names] == labels.names


def test_string_labels_sort_alphabetically():
    labels = Labels.build(["pos", "neg", "mixed", "neg", "10"])
    assert labels.names == ["10", "mixed", "neg", "pos"]
    assert not labels.numeric
    assert labels.value("10") == "10"
    assert labels.value("neg") == "neg"


def test_labels_differing_only_in_case_are_grouped():
    labels = Labels.build(["pos", "Pos", "neg", "POS", "Neg", "mixed"])
    assert labels.differing_in_case() == [["Neg", "neg"], ["POS", "Pos", "pos"]]
    assert Labels.build(["pos", "neg"]).differing_in_case() == []


def test_unknown_label_is_named():
    labels = Labels.build(["neg", "pos"])
    with pytest.raises(UsageError) as err:
        labels.ids(["pos", "meh"], "test.csv")
    message = str(err.value)
    assert "test.csv" in message and "'meh'" in message and "neg, pos" in message


def test_labels_json_round_trip():
    labels = Labels.build(["3", "1", "2"])
    again = Labels.from_json(json.loads(json.dumps(labels.to_json())))
    assert again.names == ["1", "2", "3"] and again.numeric


@pytest.mark.parametrize("value", [4, 4.0, "4", " 4 ", "4.0", "4.00", np.int64(4), np.float64(4.0)])
def test_normalize_label_same_label(value):
    assert normalize_label(value) == "4"


@pytest.mark.parametrize("value", [None, float("nan"), np.nan, "", "   "])
def test_normalize_label_missing(value):
    assert normalize_label(value) is None


def test_normalize_label_keeps_text_and_fractions():
    assert normalize_label(" pos\n") == "pos"
    assert normalize_label(4.5) == "4.5"
    assert normalize_label(0) == "0"  # a falsy label is not missing


@pytest.mark.parametrize("value, expected", [
    ("food,service", ["food", "service"]),
    (" service , food ,", ["food", "service"]),  # spaces and a trailing separator
    (["service", "food", "food"], ["food", "service"]),  # a list column; duplicates once
    ((3, 1.0), ["1", "3"]),  # numbers as labels, as in single-label
    ("price", ["price"]),
    (7, ["7"]),
    ("", []), (None, []), (float("nan"), []), ([], []), ([None, ""], []),
    # A list column written by pandas' to_csv, or as JSON: read as the list, not as the labels
    # "['food'" and "'price']" (which trained silently on made-up labels).
    ("['food', 'price']", ["food", "price"]), ('["service"]', ["service"]), ("[]", []),
    ("[draft]", ["[draft]"]),  # not a list literal: a label like any other
    # JSON as JSON, not as a Python literal: an emoji written as its two escapes (json.dumps'
    # default) was two lone surrogates, "\\/" (PHP's) stayed, and a null split the text on ','.
    ('["\\ud83d\\udd25 urgent"]', ["\U0001f525 urgent"]), ('["UI\\/UX"]', ["UI/UX"]),
    ('["billing", null]', ["billing"]),
])
def test_normalize_label_set(value, expected):
    assert normalize_label_set(value, ",") == expected


@pytest.mark.parametrize("value, kind", [
    ({"food": True, "price": False}, "a mapping"), ('{"food": true}', "a mapping"),
    ([{"name": "service"}], "a mapping"), ('[{"name": "service"}]', "a mapping"),  # JSON's list of objects
    ([["a", "b"]], "a list within a list"), ('[["a"]]', "a list within a list"),
])
def test_a_mapping_or_a_list_within_the_list_is_no_set_of_labels(value, kind):
    # As text, {'food': True, ...} was one label, refused for holding the separator ',', and
    # trained on as a label once the separator was changed.
    with pytest.raises(NotALabelSet, match=f"holds {kind} "):
        normalize_label_set(value, ",")
    with pytest.raises(NotALabelSet) as error:
        normalize_labels(["a", "b", value], multi_label=True, separator=",")
    assert error.value.index == 2


def test_normalize_label_set_other_separator():
    assert normalize_label_set("a|b,c", "|") == ["a", "b,c"]


def test_multi_label_labels_multi_hot_chosen_and_json():
    labels = Labels.build(["service", "food", "price"], multi_label=True)
    assert labels.names == ["food", "price", "service"] and labels.thresholds == [0.5] * 3
    targets = labels.multi_hot([["service", "food"], [], ["price"]], "f.csv")
    assert targets.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]] and targets.dtype == np.float32
    with pytest.raises(UsageError, match="f.csv: label\\(s\\) 'noise' not among") as error:
        labels.multi_hot([["noise"]], "f.csv")
    assert "--label-separator" not in str(error.value)
    # Sets joined by '|' where the model's separator is ',': one unknown label "food|price".
    with pytest.raises(UsageError) as error:
        labels.multi_hot([["food|price"]], "f.csv")
    assert str(error.value) == ("f.csv: label(s) 'food|price' not among the model's labels (food, price, "
                                "service); sets of labels joined by a separator not read as one? "
                                "--label-separator names it")
    labels.thresholds = [0.3, 0.9, 0.5]
    assert labels.chosen(np.array([0.35, 0.8, 0.5])) == [0, 2]  # at or above each threshold
    assert labels.chosen(np.array([0.1, 0.1, 0.1])) == []
    assert labels.in_order(["service", "zzz", "food"]) == ["food", "service", "zzz"]
    again = Labels.from_json(json.loads(json.dumps(labels.to_json())))
    assert again.multi_label and again.thresholds == [0.3, 0.9, 0.5] and again.names == labels.names
    assert Labels.from_json({"labels": ["a", "b"]}).multi_label is False


def test_single_label_chosen_is_the_most_probable():
    assert Labels.build(["a", "b", "c"]).chosen(np.array([0.2, 0.5, 0.3])) == [1]
