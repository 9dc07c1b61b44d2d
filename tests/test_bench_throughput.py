"""bench/throughput.py's baseline computes what hanclf's model computes, only the plain way:
its speed ratios compare two ways of getting the same predictions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from hanclf.data import EncodedDoc, collate
from hanclf.model import HANConfig, build_model
from hanclf.predict import Predictor

ROOT = Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", ROOT / "bench" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def test_the_plain_han_gives_the_models_logits():
    torch.manual_seed(0)
    model = build_model(HANConfig(vocab_size=30, num_classes=4, embed_dim=8, word_hidden=6,
                                  sent_hidden=5, word_att_dim=7, sent_att_dim=7)).eval()
    rng = np.random.default_rng(0)
    docs = []
    for sentences in (1, 4, 2, 7):
        lengths = rng.integers(1, 9, size=sentences).astype(np.int32)
        docs.append(EncodedDoc(rng.integers(2, 30, size=lengths.sum()).astype(np.int32), lengths))
    batch = collate(docs)
    with torch.no_grad():
        logits, _, _ = model(**batch)
        plain = bench.plain_han_logits(model, batch["tokens"], batch["word_lengths"], batch["sent_lengths"])
    torch.testing.assert_close(plain, logits, atol=1e-5, rtol=1e-5)


def test_the_baseline_predict_labels_as_hanclf_does(model_dir, data_dir, tmp_path):
    source = data_dir / "test.parquet"
    bench.baseline_predict(model_dir, "cpu", source, tmp_path / "baseline.parquet")
    baseline = pq.read_table(tmp_path / "baseline.parquet")
    texts = pq.read_table(source, columns=["text"]).column("text").to_pylist()
    ours = Predictor(model_dir, device="cpu").predict_table(texts)
    assert baseline.num_rows == len(texts) > 50
    assert baseline.column("pred_label").to_pylist() == [str(v) for v in ours.column("pred_label").to_pylist()]
    np.testing.assert_allclose(baseline.column("pred_prob").to_numpy(), ours.column("pred_prob").to_numpy(), atol=1e-5)
