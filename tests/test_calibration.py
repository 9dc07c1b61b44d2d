"""Calibration end to end: train fits a temperature on valid, saves it, and predict applies it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from hanclf.artifact import load
from hanclf.config import load_config
from hanclf.data import pad
from hanclf.errors import HanclfError
from hanclf.evaluate import evaluate_file
from hanclf.metrics import TEMPERATURE_RANGE, calibration_error, log_loss
from hanclf.predict import Predictor
from hanclf.training import train
from hanclf.vocab import Labels
from tests.conftest import make_reviews

TINY = {"model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4, "model.word_att_dim": 4,
        "model.sent_att_dim": 4, "train.max_epochs": 8, "train.lr": 0.01, "train.accelerator": "cpu",
        "data.min_count": 1, "data.valid_fraction": 0.25}


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """250 valid documents (enough to fit on); a fifth of all labels drawn at random, so that
    no model is always right (this one ends up unsure of itself: a temperature below 1)."""
    path = tmp_path_factory.mktemp("calibration") / "reviews.csv"
    frame = make_reviews(1_000)
    rng = np.random.default_rng(0)
    noisy = rng.random(len(frame)) < 0.2
    frame.loc[noisy, "label"] = rng.choice(["mix", "neg", "pos"], noisy.sum())
    frame.to_csv(path, index=False)
    return path


def test_train_fits_a_temperature_that_predict_applies(reviews, tmp_path):
    metrics = train(reviews, tmp_path / "m", load_config(None, TINY), progress=False)
    calibration = metrics["calibration"]
    temperature = json.loads((tmp_path / "m" / "labels.json").read_text())["temperature"]
    assert calibration["temperature"] == round(temperature, 4)
    assert TEMPERATURE_RANGE[0] < temperature < 0.9  # fitted, not a bound of the search
    raw_loss, calibrated_loss = calibration["valid_log_loss"]
    raw_error, calibrated_error = calibration["valid_calibration_error"]
    assert calibrated_loss < raw_loss - 0.1 and calibrated_error < raw_error / 2
    predictor = Predictor(tmp_path / "m", "cpu")
    assert predictor.labels.temperature == temperature
    texts = make_reviews(90, seed=3)["text"].tolist()
    logits = torch.zeros(len(texts), 3)
    with torch.inference_mode():
        for index, batch in predictor.batches(texts):
            logits[index] = predictor.model(**pad(batch, predictor.device))[0]
    probs = predictor.predict_proba(texts)
    np.testing.assert_allclose(probs, torch.softmax(logits / temperature, -1).numpy(), atol=1e-6)
    # The figures saved are those of metrics' own functions on the model's raw log-probabilities.
    targets = np.array([["mix", "neg", "pos"].index(label) for label in make_reviews(90, seed=3)["label"]])
    raw = torch.log_softmax(logits, -1).numpy()
    assert log_loss(raw, targets, temperature) == pytest.approx(log_loss(np.log(probs), targets), abs=1e-5)
    assert calibration_error(raw, targets, temperature) == pytest.approx(
        calibration_error(np.log(probs), targets), abs=1e-5)


def test_calibrate_false_keeps_the_models_own_probabilities(reviews, tmp_path):
    metrics = train(reviews, tmp_path / "m", load_config(None, {**TINY, "train.calibrate": False}), progress=False)
    assert metrics["calibration"] is None
    assert json.loads((tmp_path / "m" / "labels.json").read_text())["temperature"] == 1.0


@pytest.mark.parametrize(("saved", "temperature"), [({}, 1.0), ({"temperature": 1.25}, 1.25)])
def test_labels_json_without_a_temperature_is_a_model_of_before_calibration(saved, temperature):
    assert Labels.from_json({"labels": ["a", "b"], **saved}).temperature == temperature


def test_a_temperature_that_is_not_above_0_is_a_damaged_file(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    labels = json.loads((copy / "labels.json").read_text())
    for bad in (0, -1.5, "nan", "inf"):
        (copy / "labels.json").write_text(json.dumps({**labels, "temperature": bad}))
        with pytest.raises(HanclfError, match=r"labels.json: damaged \(temperature .*: must be a number above 0\)"):
            load(copy)


def test_evaluate_reports_how_far_pred_prob_is_from_how_often_it_is_right(reviews, tmp_path, monkeypatch):
    monkeypatch.setattr("hanclf.evaluate.BATCH_ROWS", 64)  # the bins of five batches add up
    train(reviews, tmp_path / "m", load_config(None, TINY), progress=False)
    labelled = make_reviews(300, seed=5)
    labelled.loc[::7, "label"] = "neg"  # some wrong whatever the model says
    labelled.to_csv(tmp_path / "test.csv", index=False)
    # On the CPU as the reference below: a GPU's bf16 moves the error in its fourth decimal.
    result = evaluate_file(tmp_path / "m", tmp_path / "test.csv", device="cpu")
    probs = Predictor(tmp_path / "m", "cpu").predict_proba(labelled["text"].tolist())
    top, right = probs.max(axis=1), probs.argmax(axis=1) == labelled["label"].map({"mix": 0, "neg": 1, "pos": 2})
    # By hand: 15 bins of width 1/15, each the gap between how often its documents were right
    # and their mean pred_prob, weighted by its share of the documents.
    expected = 0.0
    for b in range(15):
        inside = (np.floor(top * 15).clip(max=14) == b)
        if inside.any():
            expected += inside.mean() * abs(right[inside].mean() - top[inside].mean())
    assert result["calibration_error"] == pytest.approx(expected, abs=1e-6)
    assert 0 < expected < 1


def test_train_says_the_probabilities_were_calibrated_and_by_how_much(reviews, tmp_path):
    from typer.testing import CliRunner

    from hanclf.cli.main import app

    flags = [f"--set={key}={value}" for key, value in TINY.items()]
    result = CliRunner().invoke(app, ["train", str(reviews), "-o", str(tmp_path / "m"), "-q", *flags])
    assert result.exit_code == 0, result.output
    calibration = json.loads((tmp_path / "m" / "metrics.json").read_text())["calibration"]
    before, after = calibration["valid_calibration_error"]
    assert result.output.splitlines()[-1].endswith(
        f"; probabilities calibrated on valid (temperature {calibration['temperature']:.2f}, "
        f"calibration error {before:.1%} -> {after:.1%})")
