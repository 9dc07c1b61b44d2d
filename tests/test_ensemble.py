"""model.members = M: M independently initialised models trained side by side; predictions are the
mean of their probabilities, explanations the mean of their attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hanclf.artifact import WEIGHTS, load
from hanclf.config import load_config
from hanclf.data import EncodedDoc, collate, tokenize_texts
from hanclf.errors import UsageError
from hanclf.model import Ensemble, HANConfig, build_model, log_probabilities, members, probabilities
from hanclf.module import HANClassifier
from hanclf.predict import Predictor
from hanclf.training import train

SMALL = dict(vocab_size=30, num_classes=3, embed_dim=8, word_hidden=4, sent_hidden=5,
             word_att_dim=6, sent_att_dim=6)


def doc(*sentences: list[int]) -> EncodedDoc:
    return EncodedDoc(np.array([i for s in sentences for i in s], np.int32),
                      np.array([len(s) for s in sentences], np.int32))


BATCH = collate([doc([2, 3, 4], [5, 6]), doc([7]), doc([8, 9], [10, 11, 12], [13])])


@pytest.mark.parametrize("architecture", ["han", "flat"])
def test_prediction_is_the_mean_of_the_members_and_members_differ(architecture):
    torch.manual_seed(0)
    ensemble = build_model(HANConfig(**SMALL, architecture=architecture, members=3)).eval()
    assert isinstance(ensemble, Ensemble) and len(members(ensemble)) == 3
    a, b = members(ensemble)[:2]
    assert not torch.equal(a.embedding.weight, b.embedding.weight)  # independently initialised

    logits, word_att, sent_att = ensemble(**BATCH)
    outputs = [member(**BATCH) for member in members(ensemble)]
    assert logits.shape == (3, 3, 3)  # (members, documents, classes)
    expected = torch.stack([torch.softmax(out[0], -1) for out in outputs]).mean(0)
    torch.testing.assert_close(probabilities(logits, multi_label=False), expected)
    expected_sigmoid = torch.stack([torch.sigmoid(out[0]) for out in outputs]).mean(0)
    torch.testing.assert_close(probabilities(logits, multi_label=True), expected_sigmoid)
    torch.testing.assert_close(word_att, torch.stack([out[1] for out in outputs]).mean(0))
    torch.testing.assert_close(sent_att, torch.stack([out[2] for out in outputs]).mean(0))
    # still one distribution over each document's sentences
    torch.testing.assert_close(sent_att.sum(-1), torch.ones(3))


def test_a_temperature_reshapes_the_probabilities_and_keeps_their_order():
    logits = torch.randn(3, 64, 5) * 4  # an ensemble of 3, 64 documents
    raw, tempered = probabilities(logits, False), probabilities(logits, False, temperature=1.7)
    assert torch.equal(raw.argmax(-1), tempered.argmax(-1))
    torch.testing.assert_close(tempered.sum(-1), torch.ones(64))
    assert (tempered.max(-1).values < raw.max(-1).values).all()  # above 1: less sure of itself
    torch.testing.assert_close(tempered, torch.softmax(raw.log() / 1.7, -1))
    # One model: softmax(logits / T), the usual temperature scaling.
    torch.testing.assert_close(probabilities(logits[0], False, 0.6), torch.softmax(logits[0] / 0.6, -1))


def test_a_temperature_flattens_probabilities_that_a_float32_softmax_gives_as_0():
    # Classes 120 and 130 logits below the top: exp(-120) is 0 in float32, and log(0) / T kept
    # them at 0 where T = 20 gives them e^-6 and e^-6.5 of the top's.
    logits = torch.tensor([[0.0, -120.0, -130.0], [-125.0, 3.0, -110.0]])
    torch.testing.assert_close(probabilities(logits, False, 20.0), torch.softmax(logits / 20, -1))
    ensemble = torch.stack([logits, logits + torch.tensor([0.0, 0.0, 10.0])])  # (2, 2, 3)
    exact = torch.softmax(ensemble.double(), -1).mean(0).log()  # float64: nothing underflows
    torch.testing.assert_close(log_probabilities(ensemble).double(), exact, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(probabilities(ensemble, False, 20.0).double(), torch.softmax(exact / 20, -1))


def test_precomputed_word_gates_reach_every_member():
    torch.manual_seed(0)
    ensemble = build_model(HANConfig(**SMALL, members=2)).eval()
    expected = ensemble(**BATCH)
    ensemble.precompute_word_gates()
    assert all(m.word_encoder.input_gates is not None for m in members(ensemble))
    for got, want in zip(ensemble(**BATCH), expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("multi_label", [False, True])
def test_loss_is_the_mean_of_what_each_member_would_be_trained_on(multi_label):
    torch.manual_seed(0)
    module = HANClassifier({**SMALL, "members": 2}, {"label_smoothing": 0.0},
                           ["a", "b", "c"], multi_label=multi_label)
    logits = torch.randn(2, 4, 3)
    if multi_label:
        labels = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], dtype=torch.float32)
        each = [F.binary_cross_entropy_with_logits(lg, labels) for lg in logits]
    else:
        labels = torch.tensor([0, 2, 1, 2])
        each = [F.cross_entropy(lg, labels) for lg in logits]
    torch.testing.assert_close(module._loss(logits, labels), torch.stack(each).mean())


def test_members_must_be_a_positive_count():
    with pytest.raises(UsageError, match="model.members: must be > 0"):
        load_config(None, {"model.members": 0})


def test_trained_ensemble_is_one_model_directory_that_predicts_the_members_mean(data_dir, tmp_path):
    config = load_config(None, {
        "model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8,
        "model.word_att_dim": 8, "model.sent_att_dim": 8, "model.members": 2,
        "train.max_epochs": 6, "train.lr": 0.01, "train.accelerator": "cpu", "data.min_count": 1,
    })
    lines = []
    metrics = train(data_dir / "train.csv", tmp_path / "m", config, progress=False, log=lines.append)
    # Said once, with the ensemble's size, before the epochs: what it costs and how to opt out.
    notes = [line for line in lines if "ensemble" in line]
    assert notes == ["note: an ensemble of 2 models (model.members): 2x one model's work here and "
                     "in every prediction; --set model.members=1 trains one"]
    assert lines.index(notes[0]) < min(i for i, line in enumerate(lines) if line.startswith("epoch"))
    names = load_file(tmp_path / "m" / WEIGHTS).keys()
    assert {name.split(".")[1] for name in names} == {"0", "1"}  # members.0.*, members.1.*

    artifact = load(tmp_path / "m")
    assert artifact.config.model["members"] == 2
    texts = ["The food was wonderful! We went there on a Sunday.", "The food was awful.", ""]
    predictor = Predictor(tmp_path / "m", device="cpu")
    got = predictor.predict_proba(texts)
    batch = collate(tokenize_texts(texts, artifact.config.data).encoded(artifact.vocab))
    with torch.no_grad():
        each = [torch.softmax(m.eval()(**batch)[0], -1) for m in members(artifact.model)]
    np.testing.assert_allclose(got, torch.stack(each).mean(0).numpy(), atol=1e-5)
    assert not np.allclose(each[0].numpy(), each[1].numpy(), atol=1e-3)  # two different models
    # The cue sentences decide the label: the ensemble learned them as a single model does.
    # Not == 1.0: which of the 24 valid documents a 6-epoch run gets right is the draw of its
    # seed and torch's version (torch 2.4.1: 23 of 24 here, 24 with seeds 1 to 4).
    assert metrics["valid"]["accuracy"] >= 0.9  # chance: 1/3
    assert got[0].argmax() == predictor.labels.names.index("pos")
    assert got[1].argmax() == predictor.labels.names.index("neg")


def test_members_trained_on_their_own_batches_each_see_their_own_draw(data_dir, tmp_path, monkeypatch):
    """train.shared_batches false: every step gives each member a batch of its own, and the
    ensemble still learns the cue sentences."""
    steps = []
    training_step = HANClassifier.training_step

    def spy(self, batch, batch_idx):
        steps.append([b["labels"].tolist() for b in batch] if isinstance(batch, list) else None)
        return training_step(self, batch, batch_idx)

    monkeypatch.setattr(HANClassifier, "training_step", spy)
    config = load_config(None, {
        "model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8,
        "model.word_att_dim": 8, "model.sent_att_dim": 8, "model.members": 2,
        "train.max_epochs": 6, "train.lr": 0.01, "train.accelerator": "cpu", "data.min_count": 1,
        "train.shared_batches": False,
    })
    metrics = train(data_dir / "train.csv", tmp_path / "m", config, progress=False)
    assert steps and all(step is not None and len(step) == 2 for step in steps)
    assert sum(a != b for a, b in steps) > len(steps) // 2  # different documents, mostly
    assert metrics["valid"]["accuracy"] >= 0.9  # chance: 1/3
