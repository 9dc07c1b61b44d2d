"""train.class_weights (--class-weights): the weights computed, the loss they give, and what they
change in a model trained on imbalanced data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from hanclf.cli.main import app
from hanclf.config import class_weights_option, load_config
from hanclf.errors import UsageError
from hanclf.module import HANClassifier
from hanclf.training import class_weights, train
from hanclf.vocab import Labels

SMALL = {"vocab_size": 20, "num_classes": 3, "embed_dim": 8, "word_hidden": 4, "sent_hidden": 4,
         "word_att_dim": 4, "sent_att_dim": 4}


def test_balanced_weights_are_scikit_learns():
    labels = Labels(["a", "b", "c"])
    targets = [0] * 6 + [1] * 3 + [2] * 1
    # n / (classes * count): 10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)
    assert class_weights("balanced", labels, targets, "d.csv") == pytest.approx([10 / 18, 10 / 9, 10 / 3])


def test_balanced_multi_label_weights_are_negatives_over_positives():
    labels = Labels(["food", "service", "price"], multi_label=True)
    targets = [np.array(row, np.float32) for row in ([1, 1, 1], [1, 0, 1], [1, 0, 0], [1, 0, 0])]
    # food is on every document: nothing to balance, weight 1; service 3 / 1; price 2 / 2.
    assert class_weights("balanced", labels, targets, "d.csv") == pytest.approx([1.0, 3.0, 1.0])


def test_given_weights_in_label_order_unlisted_labels_one():
    labels = Labels(["1", "2", "5"])
    assert class_weights({"5": 0.5, "1": 2.0}, labels, [0, 1, 2], "d.csv") == [2.0, 1.0, 0.5]
    assert class_weights(None, labels, [0, 1, 2], "d.csv") is None


def test_a_weight_for_a_label_the_data_lacks_is_refused():
    with pytest.raises(UsageError, match=r"label '4' is not among the labels of d.csv \(1, 2, 5\)"):
        class_weights({"4": 2.0}, Labels(["1", "2", "5"]), [0, 1, 2], "d.csv")


def test_the_loss_is_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 3), torch.tensor([0, 0, 1, 2, 2])
    weights = [0.5, 1.0, 4.0]
    module = HANClassifier(SMALL, {"label_smoothing": 0.0}, ["a", "b", "c"], class_weights=weights)
    w = torch.tensor(weights)[targets]
    by_hand = (w * F.cross_entropy(logits, targets, reduction="none")).sum() / w.sum()
    assert module._loss(logits, targets).item() == pytest.approx(by_hand.item(), rel=1e-6)
    unweighted = HANClassifier(SMALL, {"label_smoothing": 0.0}, ["a", "b", "c"])
    assert unweighted._loss(logits, targets).item() != pytest.approx(by_hand.item(), rel=1e-3)


def test_with_label_smoothing_each_documents_smoothed_loss_is_weighted():
    # cross_entropy(weight=w, label_smoothing=e) weights each class's share of the smoothing by
    # that class's weight: with balanced weights on skewed data it predicted the rare class for
    # every document.
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 2])
    weights = [0.5, 1.0, 10.0]
    module = HANClassifier(SMALL, {"label_smoothing": 0.1}, ["a", "b", "c"], class_weights=weights)
    w = torch.tensor(weights)[targets]
    log_p = logits.log_softmax(-1)
    smoothed = -(0.9 * log_p.gather(1, targets[:, None])[:, 0] + 0.1 * log_p.mean(-1))
    assert module._loss(logits, targets).item() == pytest.approx(((w * smoothed).sum() / w.sum()).item(), rel=1e-6)
    # The loss is least when every document's own class is predicted, rare class or not.
    free = torch.zeros(1000, 3, requires_grad=True)
    labels = torch.tensor([0] * 600 + [1] * 390 + [2] * 10)
    balanced = class_weights("balanced", Labels(["a", "b", "c"]), labels.tolist(), "d.csv")
    module = HANClassifier(SMALL, {"label_smoothing": 0.1}, ["a", "b", "c"], class_weights=balanced)
    optimizer = torch.optim.Adam([free], lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        module._loss(free, labels).backward()
        optimizer.step()
    assert (free.argmax(1) == labels).all()


def test_the_multi_label_loss_weighs_positives():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    targets = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.float32)
    module = HANClassifier(SMALL, {"label_smoothing": 0.0}, ["a", "b", "c"], multi_label=True,
                           class_weights=[1.0, 3.0, 2.0])
    p = torch.sigmoid(logits)
    pos_weight = torch.tensor([1.0, 3.0, 2.0])
    by_hand = -(pos_weight * targets * p.log() + (1 - targets) * (1 - p).log()).mean()
    assert module._loss(logits, targets).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_config_values_checked():
    # Labels are named as the data's are: 4, 4.0 and "4.0" are the label 4.
    assert load_config(None, {"train.class_weights": {1: 2, 3.0: 1, "5.0": 3, "neg": 0.5}}).train.class_weights == {
        "1": 2.0, "3": 1.0, "5": 3.0, "neg": 0.5}
    for bad, words in [("bal", "expected balanced"), ({"a": 0}, "label 'a' must be a positive"),
                       ({"a": "x"}, "weight of label 'a' must be a positive number, got 'x'"),
                       ([1, 2], "mapping"), ({}, "no labels in the mapping"),
                       ({True: 2}, "label True is a boolean; give the label as text")]:
        with pytest.raises(UsageError, match=words):
            load_config(None, {"train.class_weights": bad})


def test_option_reads_a_file(tmp_path):
    assert class_weights_option("balanced") == "balanced"
    assert class_weights_option("none") is None
    (tmp_path / "w.yaml").write_text("1: 3\n5.0: 0.5\n'yes': 2\n")
    assert class_weights_option(str(tmp_path / "w.yaml")) == {"1": 3.0, "5": 0.5, "yes": 2.0}
    (tmp_path / "exponents.json").write_text('{"a": 5e-1, "b": 1E1}')  # JSON, read by YAML 1.1
    assert class_weights_option(str(tmp_path / "exponents.json")) == {"a": 0.5, "b": 10.0}
    (tmp_path / "bad.json").write_text('{"a": "x2"}')  # a problem in the file names the file
    with pytest.raises(UsageError, match=r"bad.json: the weight of label 'a' must be a positive number, got 'x2'"):
        class_weights_option(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="list.json: expected a mapping of labels to weights"):
        class_weights_option(str(tmp_path / "list.json"))
    with pytest.raises(UsageError, match="nope.json: no such file"):
        class_weights_option(str(tmp_path / "nope.json"))
    # One label spelt twice: the last weight won without a word.
    (tmp_path / "twice.yaml").write_text("4: 2.0\n4.0: 0.5\n")
    with pytest.raises(UsageError, match="twice.yaml: label '4' is given twice"):
        class_weights_option(str(tmp_path / "twice.yaml"))
    (tmp_path / "twice.json").write_text('{"pos": 2.0, " pos": 0.5}')
    with pytest.raises(UsageError, match="twice.json: label 'pos' is given twice"):
        class_weights_option(str(tmp_path / "twice.json"))


def imbalanced(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """One document in ten is 'rare'; a cue word marks 90% of them and 5% of the others. In a
    few epochs, a small model on the plain loss learns to predict 'common' only."""
    rng = np.random.default_rng(seed)
    filler = ["good", "fine", "nice", "ok", "bad", "meh", "plain", "food", "place"]
    rows = []
    for i in range(n):
        label = "rare" if i % 10 == 0 else "common"
        words = list(rng.choice(filler, 12))
        if rng.random() < (0.9 if label == "rare" else 0.05):
            words[3] = "awful"
        rows.append({"text": " ".join(words) + ".", "label": label})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_balanced_weights_make_a_model_predict_the_rare_class(tmp_path):
    imbalanced().to_csv(tmp_path / "train.csv", index=False)
    predicted_rare, recall = {}, {}
    for setting in (None, "balanced"):
        config = load_config(None, {
            "model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8,
            "train.max_epochs": 5, "train.lr": 0.01, "train.batch_size": 16,
            "train.accelerator": "cpu", "data.min_count": 1, "data.valid_fraction": 0.5,
            "train.class_weights": setting, "train.select_on": "macro_f1",
        })
        metrics = train(tmp_path / "train.csv", tmp_path / str(setting), config, progress=False)
        confusion = np.array(metrics["valid"]["confusion_matrix"])  # rows true, columns predicted
        predicted_rare[setting] = confusion[:, 1].sum()
        recall[setting] = metrics["valid"]["per_class"]["rare"]["recall"]
    assert predicted_rare[None] == 0 and recall[None] == 0.0
    assert recall["balanced"] >= 0.6
    saved = json.loads((tmp_path / "balanced" / "metrics.json").read_text())
    assert saved["class_weights"] == pytest.approx({"common": 400 / (2 * 360), "rare": 400 / (2 * 40)}, rel=0.15)


@pytest.mark.slow
def test_cli_flag_takes_a_file_of_weights(tmp_path):
    imbalanced(200).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "weights.json").write_text('{"rare": 4}')
    args = ["train", str(tmp_path / "train.csv"), "-o", str(tmp_path / "m"), "--max-epochs", "1",
            "--class-weights", str(tmp_path / "weights.json"), "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "class weights: common 1, rare 4" in result.output
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["class_weights"] == {"common": 1.0, "rare": 4.0}
    (tmp_path / "weights.json").write_text('{"nope": 4}')
    result = CliRunner().invoke(app, [*args[:3], str(tmp_path / "m2"), *args[4:]])
    assert result.exit_code == 2
    assert "label 'nope' is not among the labels" in result.output


def test_a_weight_for_an_unknown_label_fails_before_tokenizing(tmp_path, monkeypatch):
    # It failed after the whole training set was tokenized: minutes on millions of rows.
    imbalanced(100).to_csv(tmp_path / "train.csv", index=False)

    def tokenize(*args, **kwargs):
        raise AssertionError("tokenized before the weights were checked")

    monkeypatch.setattr("hanclf.datamodule.tokenize_in_parallel", tokenize)
    config = load_config(None, {"train.class_weights": {"rarre": 4.0}, "train.accelerator": "cpu"})
    with pytest.raises(UsageError, match="label 'rarre' is not among the labels"):
        train(tmp_path / "train.csv", tmp_path / "m", config, progress=False)


def test_label_smoothing_moves_each_multi_label_target_towards_one_half():
    # It was ignored for multi-label models: the same weights with and without it.
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 3), torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]]).float()
    module = HANClassifier(SMALL, {"label_smoothing": 0.2}, ["a", "b", "c"], multi_label=True)
    by_hand = F.binary_cross_entropy_with_logits(logits, targets * 0.8 + 0.1)
    assert module._loss(logits, targets).item() == pytest.approx(by_hand.item(), rel=1e-6)
    plain = HANClassifier(SMALL, {"label_smoothing": 0.0}, ["a", "b", "c"], multi_label=True)
    assert plain._loss(logits, targets).item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, targets).item())
