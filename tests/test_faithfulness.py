"""Faithfulness of sentence attention: exact values on a hand-written rule "model" with
attention given by hand, and one check on a trained HAN whose deciding sentences are planted.

The rule: p(positive) = 0.9 if any sentence contains the token "great", else 0.2; a document
with no sentences left gets the prior p(positive) = 0.6. Texts are sentences separated by "|".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from hanclf.faithfulness import faithfulness, format_table
from hanclf.errors import UsageError

P_GREAT, P_PLAIN, P_PRIOR = 0.9, 0.2, 0.6
SAMPLE_TEST = Path(__file__).resolve().parents[1] / "sample_data" / "test.parquet"


@dataclass
class FakeAttention:
    sentences: list[list[str]]
    sent_att: np.ndarray
    probs: np.ndarray


def rule(doc: list[list[str]]) -> np.ndarray:
    """[p(negative), p(positive)]."""
    if not doc:
        p = P_PRIOR
    else:
        p = P_GREAT if any("great" in s for s in doc) else P_PLAIN
    return np.array([1 - p, p])


class RulePredictor:
    """Duck-types `Predictor`: `attend`, `predict_tokenized`, `labels`; records its calls."""

    labels = ["negative", "positive"]

    def __init__(self, attention: dict[str, list[float]] | None = None) -> None:
        self.attention = attention or {}
        self.attend_calls: list[int] = []
        self.predict_calls: list[int] = []
        self.seen: list[list[list[str]]] = []

    @staticmethod
    def split(text: str | None) -> list[list[str]]:
        return [s.split() for s in (text or "").split("|") if s.split()]

    def attend(self, texts):
        self.attend_calls.append(len(texts))
        out = []
        for text in texts:
            doc = self.split(text)
            att = self.attention.get(text, [1 / len(doc)] * len(doc) if doc else [])
            out.append(FakeAttention(doc, np.array(att, dtype=np.float32), rule(doc)))
        return out

    def predict_tokenized(self, docs):
        self.predict_calls.append(len(docs))
        self.seen.extend(docs)
        return np.array([rule(d) for d in docs], dtype=np.float32).reshape(len(docs), 2)


DOC = "great food | the room | we sat"  # the deciding sentence is the first


def k_row(result: dict, k: int) -> dict:
    return next(r for r in result["per_k"] if r["k"] == k)


def draws(seed: int, sizes: list[int], repeats: int) -> list[np.ndarray]:
    """The documented random draws: one rng, `repeats` permutations per used document in order."""
    rng = np.random.default_rng(seed)
    return [np.stack([rng.permutation(n) for _ in range(repeats)]) for n in sizes]


def test_attention_on_the_deciding_sentence():
    fake = RulePredictor({DOC: [0.7, 0.2, 0.1]})
    r = faithfulness(fake, [DOC], k_values=(1, 2), random_repeats=3)
    one, two = k_row(r, 1), k_row(r, 2)
    # removing "great food" drops p(positive) from 0.9 to 0.2; keeping only it changes nothing
    assert one["comprehensiveness"]["attention"] == pytest.approx(0.7, abs=1e-6)
    assert one["sufficiency"]["attention"] == pytest.approx(0.0, abs=1e-6)
    assert two["comprehensiveness"]["attention"] == pytest.approx(0.7, abs=1e-6)
    assert two["sufficiency"]["attention"] == pytest.approx(0.0, abs=1e-6)
    assert r["flip_rate"]["attention"] == 1.0
    # deletion in attention order: p = 0.9, 0.2, 0.2, then the prior 0.6 with nothing left
    assert r["aopc"]["attention"] == pytest.approx(0.7, abs=1e-6)
    curve = r["deletion_curve"]
    assert curve["fraction_removed"] == pytest.approx(np.linspace(0, 1, 11))
    expected = np.interp(np.linspace(0, 1, 11), [0, 1 / 3, 2 / 3, 1], [0.9, 0.2, 0.2, 0.6])
    assert curve["attention"] == pytest.approx(expected, abs=1e-6)
    assert curve["attention"][1] == pytest.approx(0.9 - 0.7 * 0.3, abs=1e-6)
    assert r["mean_prob"] == pytest.approx(0.9)
    assert (r["documents"], r["used"], r["skipped_short"]) == (1, 1, 0)
    json.dumps(r)  # JSON-ready as it is


def test_attention_on_the_wrong_sentence():
    fake = RulePredictor({DOC: [0.1, 0.6, 0.3]})  # top-1 "the room", top-2 adds "we sat"
    r = faithfulness(fake, [DOC], k_values=(1, 2), random_repeats=2)
    assert k_row(r, 1)["comprehensiveness"]["attention"] == pytest.approx(0.0, abs=1e-6)
    assert k_row(r, 1)["sufficiency"]["attention"] == pytest.approx(0.7, abs=1e-6)
    assert k_row(r, 2)["comprehensiveness"]["attention"] == pytest.approx(0.0, abs=1e-6)
    assert k_row(r, 2)["sufficiency"]["attention"] == pytest.approx(0.7, abs=1e-6)
    assert r["flip_rate"]["attention"] == 0.0
    # deletion in attention order never reaches "great food" before the document is empty
    assert r["aopc"]["attention"] == pytest.approx(0.0, abs=1e-6)
    expected = np.interp(np.linspace(0, 1, 11), [0, 1 / 3, 2 / 3, 1], [0.9, 0.9, 0.9, 0.6])
    assert r["deletion_curve"]["attention"] == pytest.approx(expected, abs=1e-6)


def test_sufficiency_keeps_original_order_and_ties_go_to_the_earlier_sentence():
    text = "a b | great c | d"
    fake = RulePredictor({text: [0.4, 0.2, 0.4]})  # tie: sentence 0 ranks before sentence 2
    faithfulness(fake, [text], k_values=(2,), random_repeats=1)
    assert [["a", "b"], ["d"]] in fake.seen  # kept: top-2 = {0, 2}, in document order
    assert [["great", "c"], ["d"]] in fake.seen  # removed top-1 = sentence 0, not sentence 2


def test_two_deciding_sentences_need_k_2():
    text = "great a | great b | c"
    fake = RulePredictor({text: [0.5, 0.3, 0.2]})
    r = faithfulness(fake, [text], k_values=(1, 2), random_repeats=1)
    assert k_row(r, 1)["comprehensiveness"]["attention"] == pytest.approx(0.0, abs=1e-6)
    assert k_row(r, 2)["comprehensiveness"]["attention"] == pytest.approx(0.7, abs=1e-6)


def test_random_baseline_averages_the_seeded_draws():
    texts = [DOC, "x | great y | z | w", "the room | we sat"]
    fake = RulePredictor({DOC: [0.7, 0.2, 0.1]})
    repeats, seed = 7, 123
    r = faithfulness(fake, texts, k_values=(1, 2), random_repeats=repeats, seed=seed)
    perms = draws(seed, [3, 4, 2], repeats)
    great_at = [0, 1, None]  # the "great" sentence of each document (none in the last)

    comp1, suff1, flips = [], [], []
    for doc_perms, g in zip(perms, great_at):
        if g is None:  # negative doc, p(negative)=0.8 whatever is removed or kept (never empty)
            comp1.append(0.0), suff1.append(0.0), flips.append(0.0)
            continue
        hit = np.mean(doc_perms[:, 0] == g)  # share of draws whose first sentence is "great"
        comp1.append(0.7 * hit)
        suff1.append(0.7 * (1 - hit))
        flips.append(hit)
    row = k_row(r, 1)
    assert row["comprehensiveness"]["random"] == pytest.approx(np.mean(comp1), abs=1e-6)
    assert row["sufficiency"]["random"] == pytest.approx(np.mean(suff1), abs=1e-6)
    assert r["flip_rate"]["random"] == pytest.approx(np.mean(flips), abs=1e-6)

    comp2 = [0.7 * np.mean([g in p[:2] for p in doc_perms]) if g is not None else 0.0
             for doc_perms, g in zip(perms, great_at)]
    # the 2-sentence document is capped at k=1 for k=2
    assert k_row(r, 2)["comprehensiveness"]["random"] == pytest.approx(np.mean(comp2), abs=1e-6)

    ratio = row["comprehensiveness"]["attention"] / row["comprehensiveness"]["random"]
    assert row["comprehensiveness"]["ratio"] == pytest.approx(ratio)
    # same seed, same figures; the draws are what differ with another seed
    assert faithfulness(fake, texts, k_values=(1, 2), random_repeats=repeats, seed=seed) == r


def test_random_baseline_converges_to_its_expectation():
    fake = RulePredictor({DOC: [0.7, 0.2, 0.1]})
    r = faithfulness(fake, [DOC], k_values=(1,), random_repeats=3000, seed=1)
    # one random sentence of three removed: "great" goes with probability 1/3
    assert k_row(r, 1)["comprehensiveness"]["random"] == pytest.approx(0.7 / 3, abs=0.02)
    assert k_row(r, 1)["comprehensiveness"]["ratio"] == pytest.approx(3.0, abs=0.3)
    # random deletion order of 3: p after 1 removal is 0.2 w.p. 1/3, after 2 w.p. 2/3
    assert r["aopc"]["random"] == pytest.approx(0.7 * (1 / 3 + 2 / 3) / 2, abs=0.02)


def test_short_documents_are_skipped_and_counted():
    texts = ["great food", "", None, "   ", DOC, "the room | we sat"]
    fake = RulePredictor({DOC: [0.7, 0.2, 0.1]})
    r = faithfulness(fake, texts, k_values=(1,), random_repeats=2)
    assert (r["documents"], r["used"], r["skipped_short"]) == (6, 2, 4)
    assert r["mean_sentences"] == pytest.approx(2.5)
    # mean over the two used documents: 0.7 (DOC) and 0 (negative, nothing to remove matters)
    assert k_row(r, 1)["comprehensiveness"]["attention"] == pytest.approx(0.35, abs=1e-6)


def test_nothing_usable_gives_none_not_an_error():
    r = faithfulness(RulePredictor(), ["great food", ""], k_values=(1,))
    assert (r["documents"], r["used"], r["skipped_short"]) == (2, 0, 2)
    assert k_row(r, 1)["comprehensiveness"] == {"attention": None, "random": None, "ratio": None}
    assert r["deletion_curve"]["attention"] is None
    json.dumps(r)
    Console(record=True, width=120).print(format_table(r))


def test_k_is_capped_so_something_remains():
    text = "great a | b"
    fake = RulePredictor({text: [0.8, 0.2]})
    r = faithfulness(fake, [text, DOC], k_values=(1, 3, 5), random_repeats=2)
    assert [k_row(r, k)["capped"] for k in (1, 3, 5)] == [0, 2, 2]  # 2 sentences: k'=1; DOC: k'=2
    assert all(doc for doc in fake.seen[1:])  # only the prior query (first) is ever empty
    assert fake.seen[0] == []
    for k in (3, 5):  # k'=1 for "great a | b": comp 0.7, suff 0; DOC uniform: top-2 = {0, 1}
        assert k_row(r, k)["comprehensiveness"]["attention"] == pytest.approx(0.7, abs=1e-6)
        assert k_row(r, k)["sufficiency"]["attention"] == pytest.approx(0.0, abs=1e-6)


def test_perturbed_copies_are_batched():
    texts = [DOC] * 10 + ["x | great y | z | w"] * 10
    fake = RulePredictor()
    faithfulness(fake, texts, k_values=(1, 2, 3), random_repeats=5, batch_docs=8)
    assert fake.attend_calls == [8, 8, 4]
    # one query for the prior, then one call per chunk holding all its perturbed copies
    assert fake.predict_calls[0] == 1 and len(fake.predict_calls) == 4
    # per document: itself + (1 + repeats) deletion orders x (n-1) steps
    # + (1 + repeats) sufficiency copies x distinct k'
    per_doc = {3: 1 + 6 * 2 + 6 * 2, 4: 1 + 6 * 3 + 6 * 3}
    assert fake.predict_calls[1:] == [8 * per_doc[3], 2 * per_doc[3] + 6 * per_doc[4], 4 * per_doc[4]]


def test_bad_arguments():
    for kwargs in ({"k_values": (0,)}, {"k_values": ()}, {"random_repeats": 0}, {"batch_docs": 0}):
        with pytest.raises(UsageError):  # as the README promises of the API: not a bare ValueError
            faithfulness(RulePredictor(), [DOC], **kwargs)
    with pytest.raises(TypeError, match="k_values '12': give a list"):  # was k = 1 and k = 2
        faithfulness(RulePredictor(), [DOC], k_values="12")


def test_format_table_shows_the_figures():
    fake = RulePredictor({DOC: [0.7, 0.2, 0.1]})
    r = faithfulness(fake, [DOC, "great food"], k_values=(1, 2), random_repeats=3)
    table = format_table(r)
    assert table.title.endswith(", 1 documents")
    assert table.caption == "documents of fewer than 2 sentences skipped: 1"
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    for label in ("comprehensiveness@1", "comprehensiveness@2", "sufficiency@1", "AOPC", "flip rate"):
        assert label in text
    assert "0.7000" in text


@pytest.mark.slow
def test_sample_model_attention_beats_random_deletion(sample_model_dir):
    """The sample data's label is decided by one planted sentence: a HAN trained on it should
    attend to it, and removing it should matter far more than removing a random sentence."""
    from hanclf.predict import Predictor

    texts = pd.read_parquet(SAMPLE_TEST, columns=["text"])["text"].tolist()
    r = faithfulness(Predictor(sample_model_dir, "cpu"), texts, k_values=(1, 2, 3))
    assert r["used"] == len(texts) == 100 and r["skipped_short"] == 0
    comp = k_row(r, 1)["comprehensiveness"]
    assert comp["attention"] >= 3 * comp["random"] > 0
    assert r["aopc"]["attention"] > r["aopc"]["random"]
    assert r["flip_rate"]["attention"] > r["flip_rate"]["random"]
