"""Training survives a crash: `kill -9` mid-epoch, then `--resume` finishes the run."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hanclf.errors import HanclfError
from tests.conftest import SAMPLE_DATA, with_bidirectional_names

pytestmark = pytest.mark.slow

SMALL = ["--set", "model.embed_dim=32", "--set", "model.word_hidden=16", "--set", "model.sent_hidden=16",
         "--set", "model.word_att_dim=16", "--set", "model.sent_att_dim=16", "--set", "train.lr=0.02",
         "--set", "train.patience=10", "--max-epochs", "6", "--accelerator", "cpu", "--quiet"]


def hanclf(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hanclf", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, **kwargs)


def assert_same_weights(a, b) -> None:
    weights_a, weights_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path):
    out = tmp_path / "model"
    work = tmp_path / ".model.training"
    run = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL)
    for line in run.stderr:
        if line.startswith("epoch 2/6"):
            os.kill(run.pid, signal.SIGKILL)  # mid-epoch 3, or as epoch 2's checkpoint is written
            break
    run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not out.exists() and (work / "last.ckpt").is_file()

    again = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL)
    _, err = again.communicate()
    assert again.returncode == 2 and "--resume" in err and not out.exists()

    # Settings that differ from the interrupted run's are refused, even when they are the
    # defaults (those were taken for "no settings given", and the saved ones used silently).
    differing = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), "--resume",
                       "--set", "model.embed_dim=200", "--quiet")
    _, err = differing.communicate()
    assert differing.returncode == 2
    assert err.startswith(f"error: --resume continues with the settings saved in {work / 'config.yaml'}")

    # A scheduler's retry: the first command again, with --resume.
    resumed = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--resume")
    _, resumed_err = resumed.communicate()
    assert resumed.returncode == 0, resumed_err
    assert "resuming from" in resumed_err and "epoch 3/6" in resumed_err and "epoch 1/6" not in resumed_err
    assert not work.exists()

    straight = tmp_path / "straight"
    full = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(straight), *SMALL)
    _, err = full.communicate()
    assert full.returncode == 0, err

    after_resume = json.loads((out / "metrics.json").read_text())
    uninterrupted = json.loads((straight / "metrics.json").read_text())
    assert after_resume["epochs_run"] == uninterrupted["epochs_run"] == 6
    # Times are this call's: say so, and for how many epochs the earlier call ran.
    assert uninterrupted["epochs_before_resume"] == 0 and len(uninterrupted["epoch_seconds"]) == 6
    assert after_resume["epochs_before_resume"] == 6 - len(after_resume["epoch_seconds"]) >= 1
    assert re.search(rf"\(epoch \d+ of 6, [\d.]+s, resumed after epoch {after_resume['epochs_before_resume']}\)",
                     resumed_err), resumed_err
    # The same batches in the same order and the same dropout masks: the same model.
    assert after_resume["valid"] == uninterrupted["valid"]
    assert_same_weights(out, straight)
    validations = [pd.read_csv(d / "history.csv").dropna(subset=["val_acc"]).reset_index(drop=True)
                   for d in (out, straight)]
    assert validations[0]["epoch"].tolist() == list(range(6))
    pd.testing.assert_frame_equal(*(v[["epoch", "val_acc", "val_loss"]] for v in validations))


def test_resume_reads_checkpoints_written_with_one_bidirectional_gru(tmp_path):
    """A run killed under hanclf before 951bbbb, resumed after an upgrade: its checkpoints name
    each encoder's directions gru.weight_ih_l0 and gru.weight_ih_l0_reverse (as its saved
    models do, test_artifact.py). Both the last epoch's and the best epoch's are read."""
    out, work = tmp_path / "model", tmp_path / ".model.training"
    run = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL)
    for line in run.stderr:
        if line.startswith("epoch 2/6"):
            os.kill(run.pid, signal.SIGKILL)
            break
    run.wait()
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = torch.load(work / name, weights_only=True)
        old_names = with_bidirectional_names(checkpoint["state_dict"])
        assert "model.word_encoder.gru.weight_hh_l0_reverse" in old_names
        torch.save({**checkpoint, "state_dict": old_names}, work / name)
    resumed = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--resume")
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err[-2000:]
    straight = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(tmp_path / "straight"), *SMALL)
    straight.communicate()
    assert_same_weights(out, tmp_path / "straight")


def test_resume_continues_after_the_last_epoch_not_the_best_one(tmp_path):
    # A learning rate too small to move valid accuracy: the first epoch stays the best one.
    out, work = tmp_path / "model", tmp_path / ".model.training"
    run = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--set", "train.lr=1e-12")
    for line in run.stderr:
        if line.startswith("epoch 4/6"):  # the third epoch's checkpoint is written by now
            os.kill(run.pid, signal.SIGKILL)
            break
    run.wait()
    assert run.returncode == -signal.SIGKILL
    assert torch.load(work / "best.ckpt", weights_only=False)["epoch"] == 0
    assert torch.load(work / "last.ckpt", weights_only=False)["epoch"] >= 2


def test_a_run_interrupted_twice_keeps_every_epochs_history(tmp_path):
    # Lightning's CSV logger deletes the interrupted call's epochs as a resumed call starts:
    # after a second interruption, the first call's epochs were gone from history.csv.
    out = tmp_path / "model"
    for stop_at in ("epoch 2/6", "epoch 4/6"):
        run = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--resume")
        for line in run.stderr:
            if line.startswith(stop_at):
                os.kill(run.pid, signal.SIGKILL)
                break
        run.wait()
        assert run.returncode == -signal.SIGKILL
    resumed = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--resume")
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(6)) and history["val_acc"].notna().all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_before_resume"] >= 3


def test_a_run_interrupted_after_its_last_epoch_resumes(tmp_path, monkeypatch):
    # SIGTERM in the validation after the last epoch: Lightning exited 1 with no message, and
    # every --resume then failed (no epoch left to run, so no history file: a traceback).
    import pytorch_lightning as pl

    from hanclf.config import load_config
    from hanclf.training import train

    config = load_config(None, {"model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8,
                                "train.max_epochs": 2, "train.accelerator": "cpu"})
    out, work = tmp_path / "model", tmp_path / ".model.training"

    def terminated(*args, **kwargs):
        raise SystemExit(1)  # what Lightning's validate() does on a KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pl.Trainer, "validate", terminated)
        with pytest.raises(KeyboardInterrupt):
            train(SAMPLE_DATA / "train.csv", out, config, progress=False)
    assert torch.load(work / "last.ckpt", weights_only=False)["epoch"] == 1 and not out.exists()
    # A disk's error of the moment: this try fails, the checkpoints stay for the next.
    import hanclf.resume

    with monkeypatch.context() as patch:
        patch.setattr(hanclf.resume, "load_checkpoint", lambda path: (_ for _ in ()).throw(OSError(5, "I/O error")))
        with pytest.raises(HanclfError, match="last.ckpt: cannot be read now"):
            train(SAMPLE_DATA / "train.csv", out, config, resume=True, progress=False)
    assert (work / "last.ckpt").is_file()
    metrics = train(SAMPLE_DATA / "train.csv", out, config, resume=True, progress=False)
    assert metrics["epochs_run"] == 2 and metrics["epochs_before_resume"] == 2
    assert metrics["epoch_seconds"] == [] and metrics["valid"]["accuracy"] > 0
    assert pd.read_csv(out / "history.csv")["epoch"].tolist() == [0, 1]
    assert not work.exists()

    # The epochs' file emptied by a kill: their history is lost, the run is not.
    with monkeypatch.context() as patch:
        patch.setattr(pl.Trainer, "validate", terminated)
        with pytest.raises(KeyboardInterrupt):
            train(SAMPLE_DATA / "train.csv", tmp_path / "again", config, progress=False)
    (tmp_path / ".again.training" / "metrics.csv").write_text("")
    metrics = train(SAMPLE_DATA / "train.csv", tmp_path / "again", config, resume=True, progress=False)
    assert metrics["epochs_run"] == 2 and pd.read_csv(tmp_path / "again" / "history.csv").empty


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="writes to /dev/full, which is always full")
def test_a_checkpoint_on_a_full_disk_fails_with_the_disks_error(tmp_path):
    # torch.save reported the full disk as a RuntimeError ("unexpected pos"), which the CLI
    # printed as a traceback instead of its line on the disk being full.
    from hanclf.resume import CheckpointsBeside

    (tmp_path / ".last.ckpt.partial").symlink_to("/dev/full")  # where it is written first
    with pytest.raises(OSError) as raised:
        CheckpointsBeside().save_checkpoint({"weights": torch.zeros(100_000)}, tmp_path / "last.ckpt")
    assert raised.value.errno == errno.ENOSPC
    assert not (tmp_path / "last.ckpt").exists()


def test_checkpoints_never_go_through_tmpdir_and_a_damaged_one_is_trained_over(tmp_path, monkeypatch):
    # Lightning wrote each checkpoint to a file in TMPDIR first (a pod's small /tmp: "no space
    # left"), then moved it: across filesystems a copy, which a kill could leave cut short, and
    # every --resume then failed with a traceback.
    import tempfile

    from hanclf.config import load_config
    from hanclf.training import train

    in_tmpdir = []
    mkstemp = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: (k.get("dir") is None and in_tmpdir.append(a))
                        or mkstemp(*a, **k))
    config = load_config(None, {"model.embed_dim": 16, "model.word_hidden": 8, "model.sent_hidden": 8,
                                "train.max_epochs": 1, "train.accelerator": "cpu"})
    out, work = tmp_path / "model", tmp_path / ".model.training"
    lines = []
    train(SAMPLE_DATA / "train.csv", out, config, progress=False, log=lines.append)
    assert in_tmpdir == []
    out.rename(tmp_path / "first")
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    (work / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    lines.clear()
    train(SAMPLE_DATA / "train.csv", out, config, resume=True, progress=False, log=lines.append)
    assert lines[0].startswith(f"no interrupted run to resume ({work / 'last.ckpt'} cannot be read (")
    assert lines[0].endswith("): training from the start")
    assert_same_weights(out, tmp_path / "first")


def test_resume_without_an_interrupted_run_trains_from_the_start(tmp_path):
    # A scheduler's retries run one command: --resume must also do for the first attempt, and
    # after a run killed in its first epoch (settings written, no epoch to continue from).
    out = tmp_path / "m"
    (tmp_path / ".m.training").mkdir()
    (tmp_path / ".m.training" / "config.yaml").write_text("data: {}\n")
    run = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--max-epochs", "2", "--resume")
    _, err = run.communicate()
    assert run.returncode == 0, err
    lines = err.strip().splitlines()
    assert lines[0] == (f"no interrupted run to resume (no {tmp_path / '.m.training' / 'last.ckpt'}): "
                        "training from the start")
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert "resumed" not in lines[-1]
    # Nor does a retry without --resume stop at a run killed before its first checkpoint.
    (tmp_path / ".m2.training").mkdir()
    (tmp_path / ".m2.training" / "config.yaml").write_text("data: {}\n")
    again = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(tmp_path / "m2"), *SMALL, "--max-epochs", "1")
    _, err = again.communicate()
    assert again.returncode == 0, err


def test_resume_after_the_run_finished_keeps_the_model(tmp_path):
    # A retry after success (the pod killed after writing the model, a workflow re-run).
    out = tmp_path / "m"
    command = ["train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--max-epochs", "2"]
    first = hanclf(*command)
    assert first.wait() == 0
    weights = (out / "model.safetensors").read_bytes()
    valid = json.loads((out / "metrics.json").read_text())["valid"]
    again = hanclf(*command, "--resume")
    _, err = again.communicate()
    assert again.returncode == 0, err
    assert err.strip().splitlines() == [
        f"nothing to resume: {out} holds this run's finished model, valid accuracy {valid['accuracy']:.4f}, "
        f"macro-F1 {valid['macro_f1']:.4f} (--force trains it again)"]
    assert (out / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / ".m.training").exists()
    # Stopped between moving the model into place and removing its checkpoints: the same.
    (tmp_path / ".m.training").mkdir()
    (tmp_path / ".m.training" / "last.ckpt").write_bytes(b"the last epoch's")
    before = (out / "model.safetensors").stat().st_mtime - 10
    os.utime(tmp_path / ".m.training" / "last.ckpt", (before, before))
    again = hanclf(*command, "--resume")
    _, err = again.communicate()
    assert again.returncode == 0 and err.startswith("nothing to resume: "), err
    assert not (tmp_path / ".m.training").exists()

    # Other settings; and a job retraining every day with --resume on a file that changed: it
    # kept yesterday's model and said it had nothing to do (exit 0).
    changed = tmp_path / "today.csv"
    frame = pd.read_csv(SAMPLE_DATA / "train.csv")
    frame.assign(label=[frame["label"].iloc[1], *frame["label"].iloc[1:]]).to_csv(changed, index=False)
    refusals = [
        ([*command, "--seed", "7"],
         f"error: {out}: holds a finished model trained with other settings ({out / 'config.yaml'}); "
         "--resume does not retrain it: pass --force to train again with these, or name another directory"),
        (["train", str(changed), *command[2:]],
         f"error: {changed}: its documents, words or labels differ from those the finished model in "
         f"{out} was trained on; --resume does not retrain it: pass --force to train on this data, or "
         "name another directory"),
    ]
    for args, message in refusals:
        refused = hanclf(*args, "--resume")
        _, err = refused.communicate()
        assert refused.returncode == 2
        assert err.strip() == message
        assert (out / "model.safetensors").read_bytes() == weights


def test_a_diverging_run_stops_with_a_clear_message(tmp_path):
    out = tmp_path / "m"
    run = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), "--set", "train.lr=1e35",
                 "--set", "train.warmup_fraction=0", "--max-epochs", "2", "--quiet")
    _, err = run.communicate()
    assert run.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training loss became nan at epoch 1, step ")
    assert "lower the learning rate (e.g. --set train.lr=1e+34)" in last
    assert "Traceback" not in err and not out.exists()
    assert not (tmp_path / ".m.training").exists()  # no epoch finished: nothing to resume


def test_resume_on_other_data_is_refused(tmp_path):
    # The checkpoint's word ids are those of the first data's vocabulary: resuming on data with
    # another vocabulary saved a model whose weights did not fit its vocab.json (or, with another
    # vocabulary size, crashed with a traceback).
    out = tmp_path / "model"
    run = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL)
    for line in run.stderr:
        if line.startswith("epoch 2/6"):  # epoch 1's checkpoint is written by now
            os.kill(run.pid, signal.SIGKILL)
            break
    run.wait()
    assert (tmp_path / ".model.training" / "last.ckpt").is_file()
    other = tmp_path / "other.csv"
    frame = pd.read_csv(SAMPLE_DATA / "train.csv")
    # Other words; and the same words and labels, one row labelled otherwise (resumed silently).
    for changed in (frame.assign(text=frame["text"].str.replace("the", "a")),
                    frame.assign(label=[frame["label"].iloc[1], *frame["label"].iloc[1:]])):
        assert not changed.equals(frame)
        changed.to_csv(other, index=False)
        resumed = hanclf("train", str(other), "-o", str(out), "--resume")
        _, err = resumed.communicate()
        assert resumed.returncode == 2 and "Traceback" not in err
        assert err.strip().splitlines()[-1] == (
            f"error: {other}: its documents, words or labels differ from those of the interrupted "
            f"run in {tmp_path / '.model.training'}, whose checkpoints were trained on those; "
            "resume on the same data, or start over with --force")
        assert not out.exists()


def test_a_second_training_of_the_same_output_is_refused_while_the_first_runs(tmp_path):
    # Two runs shared the first's checkpoints and both crashed with tracebacks.
    out = tmp_path / "model"
    first = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL)
    try:
        for line in first.stderr:
            if line.startswith("epoch 1/"):
                first.send_signal(signal.SIGSTOP)  # still running (and holding its lock) meanwhile
                break
        second = hanclf("train", str(SAMPLE_DATA / "train.csv"), "-o", str(out), *SMALL, "--force")
        _, err = second.communicate(timeout=120)
        first.send_signal(signal.SIGCONT)
        assert second.returncode == 1, err  # a conflict of the moment: a retry may pass
        assert "another `hanclf train` is writing it now" in err and "Traceback" not in err
    finally:
        first.send_signal(signal.SIGCONT)
        rest, _ = first.communicate(timeout=300)
    assert first.returncode == 0, rest
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no lock or work dir left
