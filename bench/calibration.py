"""Are predict's probabilities honest? Test log loss and calibration error of trained models,
with their own probabilities and with the temperature that `hanclf train` fits on valid.

For each model directory: its probabilities on the data's `valid` and `test` rows with no
temperature, the temperature fitted on valid as train fits it (hanclf.metrics.fit_temperature),
then accuracy, log loss and expected calibration error (15 bins) on test, before and after.
Works on models trained before calibration existed (it reads their raw log-probabilities).

    python bench/calibration.py DATA.parquet LABEL_COLUMN MODEL_DIR [MODEL_DIR ...] [--output FILE.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from hanclf.data import pad
from hanclf.io import text_columns, text_values
from hanclf.metrics import calibration_error, fit_temperature, log_loss
from hanclf.model import log_probabilities
from hanclf.predict import Predictor
from hanclf.vocab import normalize_label


def raw_log_probabilities(predictor: Predictor, frame: pd.DataFrame, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """The model's untempered log-probabilities of `frame`'s texts (model.log_probabilities, as
    train fits the temperature to them) and the true class ids."""
    targets = np.array([predictor.labels.index[normalize_label(v)] for v in frame[label_column]])
    columns = text_columns(predictor.text_column)  # title + text read as one, as predict reads them
    texts = text_values(label_column, predictor.text_column, pa.Table.from_pandas(frame[columns]))
    log_probs = np.zeros((len(targets), len(predictor.labels)), dtype=np.float32)
    with torch.inference_mode():
        for index, batch in predictor.batches(texts):
            log_probs[index] = log_probabilities(predictor.model(**pad(batch, predictor.device))[0]).cpu().numpy()
    return log_probs, targets


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return f"{names[0]}, {len(names)} cores" if names else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("label_column")
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    frame = pd.read_parquet(args.data)
    lines = [f"# Calibration on {args.data.name} ({args.label_column}): test figures, temperature fitted on valid",
             "", f"- {cpu_name()}, torch {torch.__version__}, on the CPU",
             f"- `python bench/calibration.py {' '.join(sys.argv[1:])}`", "",
             "| model | members | temperature | test accuracy | log loss before -> after | calibration error before -> after | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for model in args.models:
        start = time.perf_counter()
        predictor = Predictor(model, "cpu")
        valid, valid_targets = raw_log_probabilities(predictor, frame[frame["split"] == "valid"], args.label_column)
        test, test_targets = raw_log_probabilities(predictor, frame[frame["split"] == "test"], args.label_column)
        temperature = fit_temperature(valid, valid_targets) or 1.0
        accuracy = (test.argmax(1) == test_targets).mean()
        losses = [log_loss(test, test_targets, t) for t in (1.0, temperature)]
        errors = [calibration_error(test, test_targets, t) for t in (1.0, temperature)]
        members = predictor.artifact.config.model["members"]
        lines.append(f"| {model.name} | {members} | {temperature:.3f} | {accuracy:.4f} | {losses[0]:.4f} -> "
                     f"{losses[1]:.4f} | {errors[0]:.4f} -> {errors[1]:.4f} | {time.perf_counter() - start:.0f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
