"""Would bf16 autocast make CPU inference faster? Predictor.predict_proba on the same texts in
float32 and under torch.autocast("cpu", dtype=torch.bfloat16), alternated, one thread.

    python bench/cpu_bf16.py --model runs/imdb --data ../shared/data/imdb_reviews.parquet --rows 1500

Prints docs/s of each pass (tokenizing included, as predict pays it), their ratio, and how far
the bf16 probabilities and labels are from float32's.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import hanclf  # first: it sets OMP_WAIT_POLICY before torch loads, as in a user's process
import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration import cpu_name  # noqa: E402

from hanclf.predict import Predictor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="Parquet with a `text` column")
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    texts = pq.read_table(args.data, columns=["text"]).column("text").to_pylist()[: args.rows]
    predictor = Predictor(args.model, device="cpu")
    predictor.predict_proba(texts[:64])  # the input-gate table and first-call costs
    modes = {"float32": contextlib.nullcontext, "bf16 autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    probs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for mode, context in modes.items():
            start = time.perf_counter()
            with context():
                probs[mode] = np.asarray(predictor.predict_proba(texts))
            rates[mode].append(len(texts) / (time.perf_counter() - start))
    print(f"{cpu_name()}, hanclf {hanclf.__version__}, torch {torch.__version__}, one thread, "
          f"{len(texts)} texts, {args.rounds} rounds alternated")
    for mode, rate in rates.items():
        print(f"{mode}: median {statistics.median(rate):,.0f} docs/s (min {min(rate):,.0f}, max {max(rate):,.0f})")
    fp32, bf16 = probs["float32"], probs["bf16 autocast"]
    ratio = statistics.median(rates["bf16 autocast"]) / statistics.median(rates["float32"])
    print(f"bf16 / float32 speed: {ratio:.2f}x; largest probability difference {np.abs(bf16 - fp32).max():.4f}; "
          f"labels that differ: {(bf16.argmax(1) != fp32.argmax(1)).sum()} of {len(texts)}")


if __name__ == "__main__":
    main()
