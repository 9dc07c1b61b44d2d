"""train.teacher (--teacher): each training document's target mixes its label with a trained
model's probabilities (distillation, e.g. of an ensemble into one model)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from conftest import make_reviews
from hanclf.cli.main import app
from hanclf.config import load_config
from hanclf.datamodule import HANDataModule, softened
from hanclf.errors import UsageError
from hanclf.evaluate import evaluate_file
from hanclf.module import HANClassifier
from hanclf.predictor import Predictor
from hanclf.training import train

TINY = {
    "model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8, "model.word_att_dim": 8,
    "model.sent_att_dim": 8, "train.max_epochs": 6, "train.lr": 0.01, "train.accelerator": "cpu",
    "data.min_count": 1,
}
SMALL = {"vocab_size": 20, "num_classes": 3, "embed_dim": 8, "word_hidden": 4, "sent_hidden": 4,
         "word_att_dim": 4, "sent_att_dim": 4}


@pytest.fixture(scope="module")
def noisy_labels(tmp_path_factory):
    """Training rows whose labels were shuffled (nothing in a text tells its label), validation
    rows labelled right: only a teacher can teach a model these texts' labels."""
    train_rows = make_reviews(240, seed=3)
    labels = train_rows["label"].tolist()
    random.Random(0).shuffle(labels)
    train_rows["label"], train_rows["split"] = labels, "train"
    valid_rows = make_reviews(60, seed=4).assign(split="valid")
    path = tmp_path_factory.mktemp("noisy") / "noisy.csv"
    pd.concat([train_rows, valid_rows]).to_csv(path, index=False)
    return path


# A teacher sure of its labels: conftest's tiny model (6 epochs) gives the right one only about
# 0.5, which softened leaves a student too little to learn in a few epochs.
SURE = {**TINY, "train.max_epochs": 12}


@pytest.fixture(scope="module")
def sure_teacher(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sure") / "teacher"
    train(data_dir / "train.csv", out, load_config(None, SURE), progress=False)
    return out


@pytest.mark.slow
def test_a_student_learns_the_teachers_labels_not_its_datas_noise(data_dir, noisy_labels, sure_teacher, tmp_path):
    alone = train(noisy_labels, tmp_path / "alone", load_config(None, SURE), progress=False)
    student = train(noisy_labels, tmp_path / "student", load_config(None, {
        **SURE, "train.teacher": str(sure_teacher), "train.teacher_weight": 1.0}), progress=False)
    models = {"teacher": sure_teacher, "alone": tmp_path / "alone", "student": tmp_path / "student"}
    test = {name: evaluate_file(path, data_dir / "test.parquet", device="cpu", progress=False)
            for name, path in models.items()}
    # The teacher labels every test document right; shuffled labels teach nothing.
    assert test["teacher"]["accuracy"] == 1.0
    assert test["student"]["accuracy"] >= 0.9 and student["valid"]["accuracy"] >= 0.9
    assert test["alone"]["accuracy"] < 0.6 and alone["valid"]["accuracy"] < 0.6


# Each process labels the training texts with the teacher, then trains on its share of the
# batches: the targets must follow the documents into either share.
@pytest.mark.slow
def test_a_student_learns_the_teachers_labels_in_two_ddp_processes(data_dir, noisy_labels, sure_teacher, tmp_path):
    settings = [arg for key, value in SURE.items() if key != "train.accelerator" for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "hanclf", "train", str(noisy_labels), "-o", str(tmp_path / "student"),
               "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--teacher", str(sure_teacher),
               "--quiet", *settings]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["processes"] == 2
    test = evaluate_file(tmp_path / "student", data_dir / "test.parquet", device="cpu", progress=False)
    assert test["accuracy"] >= 0.9 and metrics["valid"]["accuracy"] >= 0.9


@pytest.mark.parametrize(("weight", "temperature"), [(0.0, 2.0), (0.25, 1.0), (0.25, 3.0), (1.0, 1.0)])
def test_each_target_is_the_label_mixed_with_the_teachers_softened_probabilities(model_dir, noisy_labels, weight,
                                                                                temperature):
    config = load_config(None, TINY).data
    datamodule = HANDataModule(noisy_labels, None, config, 64, 42, teacher=model_dir, teacher_weight=weight,
                               teacher_temperature=temperature)
    datamodule.setup()
    rows = pd.read_csv(noisy_labels).query("split == 'train'")
    teacher = Predictor(model_dir, "cpu").predict_proba(rows["text"].tolist())
    # softmax(log p / T), by hand
    teacher = np.exp(np.log(teacher) / temperature) / np.exp(np.log(teacher) / temperature).sum(1, keepdims=True)
    one_hot = np.eye(3)[[datamodule.labels.index[label] for label in rows["label"]]]
    targets = np.stack(datamodule.train_set.targets)
    assert targets.dtype == np.float32 and targets.shape == (240, 3)
    np.testing.assert_allclose(targets, (1 - weight) * one_hot + weight * teacher, atol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    assert datamodule.valid_set.targets == datamodule.valid_targets  # valid keeps the labels alone
    assert datamodule.labels.names == ["mix", "neg", "pos"] and (teacher.argmax(1) != one_hot.argmax(1)).any()


def test_a_multi_label_student_mixes_each_labels_probability(tmp_path):
    rows = make_reviews(90)
    rows["label"] = [{"pos": "food", "neg": "service", "mix": "food,service"}[x] for x in rows["label"]]
    rows["split"] = ["train"] * 72 + ["valid"] * 18
    rows.to_csv(tmp_path / "tags.csv", index=False)
    config = load_config(None, {**TINY, "data.multi_label": True, "train.max_epochs": 2})
    train(tmp_path / "tags.csv", tmp_path / "teacher", config, progress=False)
    datamodule = HANDataModule(tmp_path / "tags.csv", None, config.data, 64, 42, teacher=tmp_path / "teacher",
                               teacher_weight=0.5, teacher_temperature=2.0)
    datamodule.setup()
    targets = np.stack(datamodule.train_set.targets)
    teacher = Predictor(tmp_path / "teacher", "cpu").predict_proba(rows["text"][:72].tolist())
    teacher = 1 / (1 + np.exp(-np.log(teacher / (1 - teacher)) / 2.0))  # sigmoid(logit p / T), by hand
    assert datamodule.labels.names == ["food", "service"]
    # make_reviews cycles pos, neg, mix: food, service, food+service.
    multi_hot = np.array([[1, 0], [0, 1], [1, 1]])[[i % 3 for i in range(72)]]
    np.testing.assert_allclose(targets, 0.5 * multi_hot + 0.5 * teacher, atol=1e-6)
    assert ((targets > 0) & (targets < 1)).any() and targets.min() >= 0 and targets.max() <= 1


def test_softening_spreads_probabilities_and_keeps_their_order():
    probs = np.array([[0.7, 0.2, 0.1], [0.0, 0.999, 0.001]])
    np.testing.assert_allclose(softened(probs, 1.0, multi_label=False), probs)
    warm = softened(probs, 2.0, multi_label=False)
    np.testing.assert_allclose(warm[0], np.sqrt(probs[0]) / np.sqrt(probs[0]).sum())
    assert (np.argsort(warm, axis=1) == np.argsort(probs, axis=1)).all() and warm[0, 0] < 0.7 and warm[1, 0] == 0
    # Multi-label: each probability on its own, 0.5 stays 0.5, 0 and 1 stay put.
    tags = np.array([[0.9, 0.5, 0.1, 0.0, 1.0]])
    np.testing.assert_allclose(softened(tags, 3.0, multi_label=True),
                               [[0.9 ** (1 / 3) / (0.9 ** (1 / 3) + 0.1 ** (1 / 3)), 0.5,
                                 0.1 ** (1 / 3) / (0.1 ** (1 / 3) + 0.9 ** (1 / 3)), 0.0, 1.0]])
    # A temperature near 0 sharpens to the winner: p ** (1 / T) underflowed to 0 / 0, and the
    # student's loss was nan at its first step.
    unsure = np.array([[0.4, 0.35, 0.25], [0.0, 0.999, 0.001]])
    np.testing.assert_allclose(softened(unsure, 0.001, multi_label=False), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(softened(tags, 0.0001, multi_label=True), [[1, 0.5, 0, 0, 1]], atol=1e-12)


def test_soft_targets_of_one_label_give_the_labels_loss_with_smoothing_and_class_weights():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 2, 2, 1])
    for train_settings, weights in (({"label_smoothing": 0.0}, None), ({"label_smoothing": 0.1}, [0.5, 1.0, 4.0])):
        module = HANClassifier(SMALL, train_settings, ["a", "b", "c"], class_weights=weights)
        hard = module._loss(logits, labels).item()
        assert module._loss(logits, F.one_hot(labels, 3).float()).item() == pytest.approx(hard, rel=1e-6)
    # A document halfway between labels a and b weighs their weights' mean, (1 + 3) / 2, against
    # one of label c at 1: its loss the mean of the two labels' losses.
    module = HANClassifier(SMALL, {"label_smoothing": 0.0}, ["a", "b", "c"], class_weights=[1.0, 3.0, 1.0])
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])

    def ce(row: int, label: int) -> float:
        return F.cross_entropy(logits[row : row + 1], torch.tensor([label])).item()

    by_hand = (2.0 * (ce(0, 0) + ce(0, 1)) / 2 + 1.0 * ce(1, 2)) / (2.0 + 1.0)
    assert module._loss(logits[:2], soft).item() == pytest.approx(by_hand, rel=1e-6)


def test_a_teacher_of_other_labels_or_another_task_is_refused(model_dir, tmp_path):
    rows = make_reviews(60)
    rows["label"] = rows["label"].replace({"mix": "neutral"})
    rows.to_csv(tmp_path / "other.csv", index=False)
    config = load_config(None, {**TINY, "train.teacher": str(model_dir)})
    with pytest.raises(UsageError, match=r"--teacher .*tiny: its labels \(mix, neg, pos\) are not those of the "
                                         r"training data \(neg, neutral, pos\); give a teacher trained on the same labels"):
        train(tmp_path / "other.csv", tmp_path / "m", config, progress=False)
    rows["label"] = "food"
    rows.to_csv(tmp_path / "tags.csv", index=False)
    config = load_config(None, {**TINY, "train.teacher": str(model_dir), "data.multi_label": True})
    with pytest.raises(UsageError, match=r"a single-label model, and this one is multi-label"):
        train(tmp_path / "tags.csv", tmp_path / "m", config, progress=False)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_teacher_weight_outside_0_to_1_or_a_temperature_of_0_is_refused(weight):
    with pytest.raises(UsageError, match=rf"config key train.teacher_weight: must be in \[0, 1\], got {weight}"):
        load_config(None, {"train.teacher_weight": weight})
    with pytest.raises(UsageError, match=r"config key train.teacher_temperature: must be > 0, got 0.0"):
        load_config(None, {"train.teacher_temperature": 0})


def test_the_cli_flag_saves_the_teachers_absolute_path_and_refuses_a_missing_one(model_dir, data_dir, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(model_dir.parent)
    overrides = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    run = CliRunner().invoke(app, ["train", str(data_dir / "train.csv"), "-o", str(tmp_path / "s"), "-q",
                                   "--teacher", model_dir.name, *overrides])
    assert run.exit_code == 0, run.output
    assert (f"teacher {model_dir}: its probabilities at temperature 2 are 100% of each training document's "
            "target, the label the rest") in run.stderr
    saved = yaml.safe_load((tmp_path / "s" / "config.yaml").read_text(encoding="utf-8"))["train"]
    assert saved["teacher"] == str(model_dir) and saved["teacher_weight"] == 1.0
    assert saved["teacher_temperature"] == 2.0
    run = CliRunner().invoke(app, ["train", str(data_dir / "train.csv"), "-o", str(tmp_path / "t"), "-q",
                                   "--teacher", "no-such-model", *overrides])
    assert run.exit_code == 2
    assert run.stderr.strip() == (f"error: --teacher {model_dir.parent / 'no-such-model'}: not a model directory "
                                  "(train one with `hanclf train`)")


def test_a_teacher_and_embeddings_file_under_home_are_found(tmp_path, monkeypatch):
    # `--embeddings ~/vec.txt` and `--set train.teacher=~/t` (the shell leaves a quoted ~ or one
    # after '=' alone) were made absolute from the current folder: "/cwd/~/vec.txt".
    from hanclf.resume import with_absolute_paths

    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(None, {"train.teacher": "~/t", "train.embeddings": "file", "train.embeddings_file": "~/v.txt"})
    absolute = with_absolute_paths(config).train
    assert (absolute.teacher, absolute.embeddings_file) == (str(tmp_path / "t"), str(tmp_path / "v.txt"))
