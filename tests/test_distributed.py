"""Training with Lightning's DDP on CPU: two processes (gloo), each on its own share of the
batches; metrics over every validation document, the model written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hanclf.evaluate import evaluate_file
from tests.conftest import SAMPLE_DATA

pytestmark = pytest.mark.slow  # ~20 s: two processes start, join and train a few epochs


# --resume with nothing to resume: every process starts afresh (the second one looked for the
# checkpoint the first one had not found, and crashed).
@pytest.mark.parametrize("resume", [[], ["--resume"]], ids=["fresh", "resume-nothing"])
def test_ddp_two_cpu_processes(tmp_path, resume):
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "hanclf", "train", str(SAMPLE_DATA / "train.csv"), "-o", str(out),
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--max-epochs", "8",
        "--set", "model.embed_dim=32", "--set", "model.word_hidden=16",
        "--set", "model.sent_hidden=16", "--set", "train.lr=0.02", "--quiet",
        # 80 valid documents make one batch of 128: the second process validates nothing and
        # must still take part in gathering the metrics.
        "--set", "train.batch_size=128", *resume,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("saved ") == 1  # the second process reports nothing
    assert proc.stderr.count("epoch 1/8") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no checkpoints left behind

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["epochs_run"] <= 8
    # The valid figures cover all 80 valid documents, not one process's share, and agree with
    # an independent evaluation of the saved model on those rows.
    assert metrics["valid"]["support"] == 80
    again = evaluate_file(out, SAMPLE_DATA / "train.csv", split="valid", device="cpu")
    assert again["confusion_matrix"] == metrics["valid"]["confusion_matrix"]
    assert metrics["valid"]["accuracy"] >= 0.6  # chance is 1/3
