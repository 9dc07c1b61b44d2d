"""Test accuracy and macro-F1 of hanclf against two strong linear baselines on real review sets.

For each task below this trains and evaluates four models on the same data:

  tfidf     TF-IDF of word 1-2 grams + logistic regression (scikit-learn), C chosen on valid
  fasttext  fastText with bigrams (the `fasttext` package, Joulin et al. 2017's setup: 10
            dimensions, softmax), lr and epochs chosen on valid
  flat      hanclf with model.architecture=flat (one BiGRU + attention over all words), otherwise
            as han (an ensemble too where the preset trains one)
  han       hanclf's HAN with the task's preset (--config yelp|imdb|amazon; each trains an
            ensemble of three, model.members: 3)

Protocol: train on the `train` rows, select hyper-parameters (and hanclf's best epoch) on `valid`
only, report on `test`, read once. fastText and the hanclf models run once per --seeds value and
report mean ± sample standard deviation; TF-IDF + LR is deterministic and runs once. Wall time
is everything from raw text to test predictions (tokenizing, the whole selection grid, every
seed). The baselines see the words hanclf's tokenizer gives (HTML removed, lower-cased), so
differences come from the models, not the preprocessing.

    python bench/accuracy.py                                  # everything: 24 hanclf trainings
    python bench/accuracy.py --models tfidf fasttext          # the baselines: ~17 min, 2 cores
    python bench/accuracy.py --tasks amazon-rating --models flat han --max-train-rows 500 \\
        --seeds 0 --smoke                                     # does it run? figures meaningless

Prints a markdown table and writes it to --output (default bench/results/accuracy.md) with every
figure, per seed, in JSON beside it (same name, .json). Needs scikit-learn and, for the fasttext
model, `pip install fasttext-wheel` (or `fasttext`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from hanclf.config import load_config
from hanclf.evaluate import evaluate_file
from hanclf.io import text_values
from hanclf.metrics import confusion_matrix, report
from hanclf.tokenize import tokenize
from hanclf.training import train

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Task:
    name: str
    file: str
    label_column: str
    preset: str
    # Test accuracy of TF-IDF+LR and fastText in the data README: held-out reviews of the same
    # sources, trained on train only.
    reference: dict[str, float]
    # Read as one text, each column's value a sentence of its own (hanclf's --text-column a,b),
    # by every model alike.
    text_columns: tuple[str, ...] = ("text",)


TASKS = {
    task.name: task
    for task in [
        Task("yelp-stars", "yelp_reviews.parquet", "stars", "yelp",
             {"tfidf": 0.605, "fasttext": 0.584}),
        Task("imdb-sentiment", "imdb_reviews.parquet", "sentiment", "imdb",
             {"tfidf": 0.904, "fasttext": 0.843}),
        Task("imdb-rating", "imdb_reviews.parquet", "rating", "imdb",
             {"tfidf": 0.437, "fasttext": 0.428}),
        Task("amazon-rating", "amazon_reviews.parquet", "rating", "amazon",
             {"tfidf": 0.605, "fasttext": 0.558}),
        # The amazon preset reads the title too; the task above is the issue's, on text alone.
        Task("amazon-rating-titled", "amazon_reviews.parquet", "rating", "amazon", {},
             ("title", "text")),
    ]
}
MODELS = {
    "tfidf": "TF-IDF 1-2 grams + LR",
    "fasttext": "fastText bigrams",
    "flat": "hanclf flat attention",
    "han": "hanclf HAN",
}
DATA_DIR = ROOT.parent / "shared" / "data"  # where the README's examples find the review sets

# Selection grids, searched on valid. C, the inverse L2 strength of the logistic regression, in
# factors of 4: Yelp and IMDb rating select 4; IMDb sentiment and Amazon select 64, the top, but
# above it their valid accuracy moves by < 0.002 (measured up to C=1024): regularization is then
# negligible. fastText: Joulin et al.'s lr grid {0.05 .. 0.5} moved up one step (0.05 was never
# selected, 0.5 often; 1.0 is the usual top for fastText), their 5 epochs and the README's 10.
C_GRID = (0.25, 1.0, 4.0, 16.0, 64.0)
FASTTEXT_LR = (0.1, 0.25, 0.5, 1.0)
FASTTEXT_EPOCHS = (5, 10)

# --smoke: a model small enough to train in seconds on a CPU, for checking that the script runs.
SMOKE = {
    "model.embed_dim": 32, "model.word_hidden": 16, "model.sent_hidden": 16,
    "model.word_att_dim": 16, "model.sent_att_dim": 16, "train.max_epochs": 1,
}


@dataclass
class TaskData:
    """The three splits of a task, each a DataFrame with columns `text` and `label`."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def load_task(task: Task, data_dir: Path, max_train_rows: int | None) -> TaskData:
    columns = [*task.text_columns, "split", task.label_column]
    frame = pd.read_parquet(data_dir / task.file, columns=columns)
    frame["text"] = text_values(task.file, list(task.text_columns), pa.Table.from_pandas(frame))
    frame = frame.rename(columns={task.label_column: "label"})
    splits = {name: part[["text", "label"]].reset_index(drop=True)
              for name, part in frame.groupby("split")}
    train_rows = splits["train"]
    if max_train_rows is not None and len(train_rows) > max_train_rows:
        # One fixed subsample for every model and seed, so they stay comparable with each other.
        train_rows = train_rows.sample(n=max_train_rows, random_state=0).reset_index(drop=True)
    return TaskData(train_rows, splits["valid"], splits["test"])


def write_hanclf_file(data: TaskData, path: Path) -> Path:
    """hanclf reads files: the (possibly subsampled) train rows, valid and test, with `split`."""
    parts = [part.assign(split=name) for name, part in
             [("train", data.train), ("valid", data.valid), ("test", data.test)]]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)
    return path


def scores(y_true: list, y_pred: list) -> dict[str, float]:
    """Accuracy and macro-F1 with hanclf's own metric code, so all four models are scored alike."""
    names = sorted(set(y_true) | set(y_pred))
    index = {name: i for i, name in enumerate(names)}
    confusion = confusion_matrix(np.array([index[y] for y in y_true]),
                                 np.array([index[y] for y in y_pred]), len(names))
    result = report(confusion, names)
    return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}


def words(texts: pd.Series) -> list[str]:
    """Each text as hanclf's lower-cased tokens joined by single spaces (no newlines: fastText
    reads one document per line)."""
    return [" ".join(w.lower() for sentence in tokenize(text) for w in sentence) for text in texts]


def tfidf_lr(data: TaskData) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    # min_df=2 drops the bigrams seen once (most of them); sublinear tf damps repeated words.
    vectorizer = TfidfVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2),
                                 min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(words(data.train.text))
    x_valid = vectorizer.transform(words(data.valid.text))
    best = None
    for c in C_GRID:
        # saga, not the default lbfgs: on Yelp's ~200k features lbfgs took 50-90 s per C on
        # 2 cores, saga 10-25 s to the same valid accuracy. random_state fixes its shuffling.
        model = LogisticRegression(C=c, solver="saga", max_iter=1000, random_state=0)
        model.fit(x_train, data.train.label)
        valid = scores(list(data.valid.label), list(model.predict(x_valid)))
        if best is None or valid["accuracy"] > best[1]["accuracy"]:
            best = model, valid, c
    model, valid, c = best
    x_test = vectorizer.transform(words(data.test.text))
    test = scores(list(data.test.label), list(model.predict(x_test)))
    return {**test, "valid_accuracy": valid["accuracy"], "selected": {"C": c},
            "features": x_train.shape[1]}


def fasttext_bigrams(data: TaskData, seed: int, work: Path) -> dict[str, Any]:
    import fasttext  # only this model needs it: pip install fasttext-wheel

    # Class indices as fastText labels: a label with a space would break its file format.
    names = sorted(set(data.train.label))
    # fastText reads its file in order, never shuffling, and IMDb's train rows come sorted by
    # label: unshuffled, imdb-sentiment scored 0.57. Shuffled by the seed.
    train = data.train.sample(frac=1, random_state=seed)
    train_file = work / "fasttext-train.txt"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    with train_file.open("w", encoding="utf-8") as f:
        for text, label in zip(words(train.text), train.label):
            f.write(f"__label__{names.index(label)} {text}\n")

    def predict(model: Any, texts: pd.Series) -> list:
        # The list form of predict: the one-string form breaks on NumPy 2 (np.array copy=False).
        labels, _ = model.predict(words(texts))
        return [names[int(found[0].removeprefix("__label__"))] for found in labels]

    best = None
    for lr, epochs in product(FASTTEXT_LR, FASTTEXT_EPOCHS):
        # One thread: fastText's threads update the weights without locks (Hogwild), so only a
        # single-threaded run gives the same model for the same seed.
        model = fasttext.train_supervised(
            str(train_file), lr=lr, epoch=epochs, dim=10, wordNgrams=2, minCount=1,
            loss="softmax", thread=1, seed=seed, verbose=0,
        )
        valid = scores(list(data.valid.label), predict(model, data.valid.text))
        if best is None or valid["accuracy"] > best[1]["accuracy"]:
            best = model, valid, {"lr": lr, "epochs": epochs}
    model, valid, selected = best
    test = scores(list(data.test.label), predict(model, data.test.text))
    return {**test, "valid_accuracy": valid["accuracy"], "selected": selected}


def hanclf_model(data_file: Path, preset: str | None, architecture: str, seed: int,
                 output: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    config = load_config(preset, {
        "model.architecture": architecture,
        "data.text_column": "text",
        "data.label_column": "label",  # write_hanclf_file's column, whatever the preset names
        "train.seed": seed,
        **overrides,
    })
    # force: a --work directory kept from an earlier run is overwritten, not an error.
    metrics = train(data_file, output, config, force=True, progress=False,
                    log=lambda line: print(f"    {output.name}: {line}", file=sys.stderr))
    device = "cpu" if config.train.accelerator == "cpu" else "auto"
    test = evaluate_file(output, data_file, split="test", device=device)
    return {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
            "valid_accuracy": metrics["valid"]["accuracy"],
            # best_epoch counts from 0; shown from 1, as `hanclf train` prints it.
            "selected": {"epoch": metrics["best_epoch"] + 1, "of": metrics["epochs_run"]}}


def fasttext_version() -> str:
    for dist in ("fasttext-wheel", "fasttext"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def summarize(task: Task, model: str, runs: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    def spread(key: str) -> tuple[float, float]:
        values = [run[key] for run in runs]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    accuracy, accuracy_std = spread("accuracy")
    macro_f1, macro_f1_std = spread("macro_f1")
    return {
        "task": task.name, "model": model, "name": MODELS[model],
        "accuracy": accuracy, "accuracy_std": accuracy_std,
        "macro_f1": macro_f1, "macro_f1_std": macro_f1_std,
        "reference_accuracy": task.reference.get(model),
        "seconds": round(seconds, 1), "runs": runs,
    }


def hanclf_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {"train.accelerator": args.accelerator}
    overrides["train.devices"] = int(args.devices) if args.devices.isdigit() else args.devices
    if args.precision:
        overrides["train.precision"] = args.precision
    if args.smoke:
        overrides.update(SMOKE)
    return overrides


def run_model(model: str, task: Task, data: TaskData, data_file: Path | None,
              args: argparse.Namespace, work: Path) -> dict[str, Any]:
    seeds = [None] if model == "tfidf" else args.seeds  # TF-IDF + LR has nothing random
    runs = []
    started = time.perf_counter()
    for seed in seeds:
        run_started = time.perf_counter()
        if model == "tfidf":
            run = tfidf_lr(data)
        elif model == "fasttext":
            run = fasttext_bigrams(data, seed, work / task.name)
        else:
            run = hanclf_model(data_file, task.preset, model, seed,
                               work / task.name / f"{model}-seed{seed}", hanclf_overrides(args))
        runs.append({"seed": seed, **run, "seconds": round(time.perf_counter() - run_started, 1)})
    return summarize(task, model, runs, time.perf_counter() - started)


def machine() -> dict[str, Any]:
    import sklearn
    import torch

    cpu = platform.processor() or "unknown"
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "scikit_learn": sklearn.__version__,
        "fasttext": fasttext_version(),
        "python": platform.python_version(),
        # Wall times depend on what else ran: record how busy the machine was at the start.
        "load_average": list(os.getloadavg()),
    }


def cell(mean: float, std: float, runs: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if runs > 1 else f"{mean:.4f}"


def selected(result: dict[str, Any]) -> str:
    def one(choice: dict[str, Any]) -> str:
        if "of" in choice:
            return f"epoch {choice['epoch']}/{choice['of']}"
        return ", ".join(f"{key}={value}" for key, value in choice.items())

    return "; ".join(dict.fromkeys(one(run["selected"]) for run in result["runs"]))


def markdown(results: list[dict[str, Any]], info: dict[str, Any], warnings: list[str]) -> str:
    m = info["machine"]
    lines = [
        "# hanclf accuracy benchmark",
        "",
        f"- command: `{info['command']}`",
        f"- date: {info['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; "
        f"torch {m['torch']}, scikit-learn {m['scikit_learn']}, fastText: {m['fasttext']}, "
        f"Python {m['python']}; load average at start {m['load_average'][0]:.1f}",
        "- test accuracy and macro-F1 (mean ± sample std over seeds where a model ran per seed); "
        "hyper-parameters and epochs selected on valid; reference: accuracy of the same "
        "baselines in the data README, on held-out reviews of the same sources",
        "- all models see hanclf's lower-cased tokens; the baselines read whole documents, "
        "hanclf the first data.max_sentences × data.max_words tokens of its preset",
    ]
    lines += [f"- **{warning}**" for warning in warnings]
    lines += [
        "",
        "| task | model | test accuracy | test macro-F1 | reference accuracy | selected on valid "
        "| seeds | wall time |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        n = len(r["runs"])
        reference = f"{r['reference_accuracy']:.3f}" if r["reference_accuracy"] else "–"
        seeds = n if r["runs"][0]["seed"] is not None else "–"
        lines.append(
            f"| {r['task']} | {r['name']} | {cell(r['accuracy'], r['accuracy_std'], n)} "
            f"| {cell(r['macro_f1'], r['macro_f1_std'], n)} | {reference} | {selected(r)} "
            f"| {seeds} | {r['seconds']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="seeds of fastText and the hanclf models")
    parser.add_argument("--max-train-rows", type=int,
                        help="train on a random subsample of this many train rows (quick runs; "
                             "the figures are then not comparable); None: all")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny hanclf models and one epoch: checks that it runs, nothing more")
    parser.add_argument("--accelerator", default="auto", help="hanclf train.accelerator")
    parser.add_argument("--devices", default="auto", help="hanclf train.devices")
    parser.add_argument("--precision",
                        help="hanclf train.precision, e.g. bf16-mixed on a GPU; None: the preset's")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="the review sets' folder")
    parser.add_argument("--work", type=Path,
                        help="keep the model directories here; None: a temporary directory")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "accuracy.md",
                        help="markdown table; the JSON goes beside it with suffix .json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings = []
    if args.max_train_rows is not None:
        warnings.append(f"train subsampled to {args.max_train_rows} rows: figures NOT comparable "
                        "with the reference or with full runs")
    if args.smoke:
        warnings.append("--smoke: tiny hanclf models, one epoch: hanclf figures are meaningless")
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if "fasttext" in args.models and fasttext_version() == "not installed":
        sys.exit("the fasttext model needs `pip install fasttext-wheel` (or drop it from --models)")

    info = {
        "command": shlex.join(["python", "bench/accuracy.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {key: str(value) if isinstance(value, Path) else value
                     for key, value in vars(args).items()},
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="hanclf-bench-") as tmp:
        work = args.work or Path(tmp)
        for name in args.tasks:
            task = TASKS[name]
            data = load_task(task, args.data_dir, args.max_train_rows)
            print(f"{name}: {len(data.train)} train / {len(data.valid)} valid / "
                  f"{len(data.test)} test", file=sys.stderr, flush=True)
            data_file = None
            if {"flat", "han"} & set(args.models):
                data_file = write_hanclf_file(data, work / name / "data.parquet")
            for model in args.models:
                result = run_model(model, task, data, data_file, args, work)
                results.append(result)
                print(f"  {MODELS[model]}: test accuracy {result['accuracy']:.4f}, macro-F1 "
                      f"{result['macro_f1']:.4f} ({result['seconds']:.0f} s)",
                      file=sys.stderr, flush=True)

    table = markdown(results, info, warnings)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table, encoding="utf-8")
    figures = {**info, "warnings": warnings, "results": results}
    args.output.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n",
                                                encoding="utf-8")
    print(f"wrote {args.output} and {args.output.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
