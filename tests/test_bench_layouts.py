"""bench/gpu_layouts.py times layouts of the GRU encoder against each other: its speed ratios
mean something only while every layout computes what hanclf's model computes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hanclf.data import EncodedDoc, collate
from hanclf.model import HANConfig, build_model

ROOT = Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu_layouts", ROOT / "bench" / "gpu_layouts.py")
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # puts bench/ on sys.path, for gpu_profile
    finally:
        sys.path[:] = path
    return module


def test_every_layout_gives_the_models_logits():
    bench = _load_bench()
    torch.manual_seed(0)
    model = build_model(HANConfig(vocab_size=30, num_classes=3, embed_dim=8, word_hidden=6,
                                  sent_hidden=5, word_att_dim=7, sent_att_dim=7))
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(40):  # ~160 sentences: the check groups from 100 rows on
        lengths = rng.integers(1, 12, size=rng.integers(1, 8)).astype(np.int32)
        docs.append(EncodedDoc(rng.integers(2, 30, size=lengths.sum()).astype(np.int32), lengths))
    bench.check_same_outputs(model, collate(docs))
    broken = bench.LAYOUTS["one_each"]
    bench.LAYOUTS["one_each"] = lambda self, x, lengths: broken(self, x.flip(1), lengths)
    try:
        with pytest.raises(AssertionError, match="one_each"):
            bench.check_same_outputs(model, collate(docs))
    finally:
        bench.LAYOUTS["one_each"] = broken
