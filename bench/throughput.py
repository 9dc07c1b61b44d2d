"""How fast hanclf turns text into predictions and models, against a straightforward baseline
measured in the same run on the same machine.

Stages, each as docs/s (IMDb-length reviews by default):

  tokenize   split + tokenize + map to ids, one core: hanclf's path (hanclf.data.tokenize_texts, .encoded)
             against a plain loop of tokenize() with Python's garbage collector running
  predict    Parquet in, Parquet out, end to end (hanclf.predict.predict_file), with the time of
             each stage measured apart in one process (read, tokenize + encode, batch + model,
             write), and with the CLI's default worker processes (one per core, one less with
             a GPU, their start-up included) where the input is large enough for more than one; each whole
             predict runs in a new process, model loading included; and the whole
             `hanclf predict` command as a user runs it (imports and exit included: the figure
             to hold against a target, no baseline); the
             baseline reads the whole file, keeps input order in fixed batches of 64 documents
             (no sorting by size), runs the plain packed HAN (plain_han_logits: padding slots
             embedded and scored, no precomputed input gates) and writes once
  train      one epoch of training (the task's preset; bf16-mixed on a GPU), docs/s over the
             whole call (reading and tokenizing included); the baseline draws batches without
             grouping documents of similar size (both train hanclf's model)

    python bench/throughput.py --data ../shared/data/imdb_reviews.parquet --rows 5000 \
        [--model runs/imdb] [--stages tokenize predict train] [--copies 5] \
        [--output bench/results/throughput-cpu.md]

--model is the model predict uses (default: the one the train stage trains, or a 1-epoch one).
Peak memory against input size is measured by bench/predict_memory.py.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import hanclf  # first: it sets OMP_WAIT_POLICY before torch loads, as in a user's process

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

import hanclf.data
from hanclf.artifact import load
from hanclf.config import DataConfig, load_config
from hanclf.data import EncodedDoc, collate, tokenize_texts, truncate
from hanclf.model import HAN, PAD, UNK
from hanclf.predict import Predictor, predict_file
from hanclf.predictor import resolve_device
from hanclf.worker_pool import worker_processes
from hanclf.tokenize import tokenize
from hanclf.vocab import Vocab

BASELINE_BATCH = 64  # documents per batch of the baseline predictor, in input order


def train(*args, **kwargs) -> dict:
    """hanclf.training.train, imported on first use: predict's worker processes import this script
    as spawned processes import their main module, and Lightning's import in each of 15 workers
    added ~12 s to every predict_file call on a 16-core GPU machine."""
    from hanclf.training import train as hanclf_train

    return hanclf_train(*args, **kwargs)


def timed(function, *args, repeats: int = 1, **kwargs) -> tuple[float, object]:
    """Median seconds of `repeats` calls and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def timed_fresh(function, *args, repeats: int = 1, **kwargs) -> float:
    """Median seconds of `repeats` calls, each in a new Python process (timed inside it, after
    the imports): what a user's `hanclf predict` meets, with nothing left warm by the stages
    timed before it in this process."""
    spawn = multiprocessing.get_context("spawn")
    times = []
    for _ in range(repeats):
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            times.append(pool.submit(timed, function, *args, **kwargs).result()[0])
    return statistics.median(times)


def whole_process(command: list[str], repeats: int) -> float:
    """Median wall seconds of `command` run as a new process, from its start to its exit."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- tokenize ----------------------------------------------------------------------------------


def plain_encode(text: str, vocab: Vocab, config: DataConfig) -> EncodedDoc:
    """The baseline's encoding: one document at a time, its tokens looked up one by one."""
    lookup = str.lower if vocab.lowercase else str
    sentences = [[vocab.index.get(lookup(w), UNK) for w in s] for s in truncate(tokenize(text), config)] or [[PAD]]
    ids = np.array([i for s in sentences for i in s], dtype=np.int32)
    return EncodedDoc(ids, np.array([len(s) for s in sentences], dtype=np.int32))


def stage_tokenize(texts: list[str], predictor: Predictor, repeats: int) -> list[list]:
    vocab, config = predictor.artifact.vocab, predictor.artifact.config.data

    def ours() -> list:
        return tokenize_texts(texts, config).encoded(vocab)

    def baseline() -> list:
        return [plain_encode(t, vocab, config) for t in texts]

    gc.collect()
    base, _ = timed(baseline, repeats=repeats)
    mine, _ = timed(ours, repeats=repeats)
    n = len(texts)
    return [["tokenize + split + ids, 1 core", n / base, n / mine]]


# --- predict -----------------------------------------------------------------------------------


def plain_han_logits(model: HAN, tokens: torch.Tensor, word_lengths: torch.Tensor,
                     sent_lengths: torch.Tensor) -> torch.Tensor:
    """The plain packed HAN of the public implementations, with hanclf's weights: every slot of
    the padded (sentences, words) grid is embedded and scored, the GRUs run on packed sequences
    on every device (nn.GRU, input projection computed for every word)."""
    is_sentence = word_lengths > 0  # (B, S)
    counts = word_lengths[is_sentence]  # (N,)
    h_words = model.word_encoder.packed(model.embedding(tokens[is_sentence]), counts)  # (N, W, 2H)
    is_word = torch.arange(tokens.size(2), device=tokens.device) < counts.unsqueeze(1)
    sent_vecs, _ = model.word_attention(h_words, is_word)  # (N, 2H)
    doc_sents = sent_vecs.new_zeros(*is_sentence.shape, sent_vecs.size(-1))  # (B, S, 2H)
    doc_sents[is_sentence] = sent_vecs
    doc_vecs, _ = model.sent_attention(model.sent_encoder.packed(doc_sents, sent_lengths), is_sentence)
    return model.classifier(doc_vecs)


def baseline_predict(model: Path, device: str, source: Path, out: Path) -> None:
    """The straightforward way: whole file in, fixed batches in input order, the plain HAN,
    whole file out."""
    artifact = load(model)
    if not isinstance(artifact.model, HAN) or artifact.model.config.doc_pooling != "encoded":
        raise SystemExit(f"{model}: the baseline is the paper's HAN; pass a model trained with it")
    torch_device = resolve_device(device)
    han = artifact.model.to(torch_device).eval()
    texts = pq.read_table(source, columns=["text"]).column("text").to_pylist()
    vocab, config = artifact.vocab, artifact.config.data
    labels, probs = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), BASELINE_BATCH):
            docs = [plain_encode(t, vocab, config) for t in texts[start : start + BASELINE_BATCH]]
            batch = {k: v.to(torch_device) for k, v in collate(docs).items()}
            logits = plain_han_logits(han, batch["tokens"], batch["word_lengths"], batch["sent_lengths"])
            p = torch.softmax(logits.float(), -1).cpu().numpy()
            labels += [artifact.labels.names[i] for i in p.argmax(1)]
            probs += p.max(1).tolist()
    pq.write_table(pa.table({"pred_label": labels, "pred_prob": probs}), out)


def predict_stages(predictor: Predictor, source: Path) -> dict[str, float]:
    """Seconds of each stage of hanclf's predict path, run one after the other."""
    seconds = {}
    start = time.perf_counter()
    texts = pq.read_table(source, columns=["text"]).column("text").to_pylist()
    seconds["read"] = time.perf_counter() - start
    start = time.perf_counter()
    vocab, config = predictor.artifact.vocab, predictor.artifact.config.data
    docs = tokenize_texts(texts, config).encoded(vocab)
    seconds["tokenize + encode"] = time.perf_counter() - start
    start = time.perf_counter()
    probs = predictor._probs(len(docs), predictor._batches(docs))  # waits for a GPU's results
    seconds["batch + model"] = time.perf_counter() - start
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.table({"pred_prob": probs.max(1)}), Path(tmp) / "p.parquet")
    seconds["write"] = time.perf_counter() - start
    return seconds


def stage_predict(model: Path, source: Path, rows: int, device: str, batch_size: int,
                  repeats: int, work: Path) -> list[list]:
    base = timed_fresh(baseline_predict, model, device, source, work / "baseline.parquet", repeats=repeats)
    table = []
    workers = worker_processes(None, resolve_device(device), source)
    runs = {"predict, Parquet to Parquet, one process (--devices 1)": 1}
    if workers > 1:
        runs[f"predict, the CLI's default here: {workers} worker processes"] = None
    for name, devices in runs.items():
        mine = timed_fresh(predict_file, model, source, work / "ours.parquet", device=device,
                           devices=devices, batch_size=batch_size, force=True, repeats=repeats)
        table.append([name, rows / base, rows / mine])
    command = [sys.executable, "-m", "hanclf", "predict", str(model), str(source), "-o",
               str(work / "cli.parquet"), "--device", device, "--force"]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    table.append(["`hanclf predict`, whole process (imports, start-up, exit), CLI default", None,
                  rows / whole_process(command, repeats)])
    for name, seconds in predict_stages(Predictor(model, device, batch_size), source).items():
        table.append([f"  stage (one process): {name}", None, rows / seconds])
    return table


# --- train -------------------------------------------------------------------------------------


def stage_train(source: Path, preset: str, rows: int, accelerator: str, precision: str,
                work: Path) -> tuple[list[list], Path]:
    # Random embeddings and one model: the figure is the training loop's, without word2vec's
    # pre-training, and of one HAN (the presets train ensembles of three).
    overrides = {"train.max_epochs": 1, "train.accelerator": accelerator, "train.precision": precision,
                 "train.embeddings": "random", "model.members": 1}
    config = load_config(preset, overrides)
    results = {}
    for name, pool in (("baseline", 1), ("ours", hanclf.data.BUCKET_POOL)):
        # Pools of one batch: each batch is a random draw of documents, as without bucketing.
        saved, hanclf.data.BUCKET_POOL = hanclf.data.BUCKET_POOL, pool
        try:
            metrics = train(source, work / f"train-{name}", config, force=True, progress=False)
        finally:
            hanclf.data.BUCKET_POOL = saved
        results[name] = metrics["train_documents"] / metrics["train_seconds"]
    note = f"train, 1 epoch ({preset} preset, one model, {precision})"
    return [[note, results["baseline"], results["ours"]]], work / "train-ours"


# --- report ------------------------------------------------------------------------------------


def machine(device: str) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and device != "cpu" else "no GPU used"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}; "
            f"load average at start {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Parquet with text, split (and the preset's label)")
    parser.add_argument("--preset", default="imdb")
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--stages", nargs="+", default=["tokenize", "predict", "train"],
                        choices=["tokenize", "predict", "train"])
    parser.add_argument("--device", default="auto", help="predict: auto, cpu, cuda")
    parser.add_argument("--accelerator", default="auto", help="train: auto, cpu, gpu")
    parser.add_argument("--precision", help="train [default: bf16-mixed on a GPU, else 32-true]")
    parser.add_argument("--batch-size", type=int, help="predict's batch size [default: hanclf's]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1, help="predict: the sampled rows this many times over")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    gpu = torch.cuda.is_available() and args.accelerator != "cpu"
    precision = args.precision or ("bf16-mixed" if gpu else "32-true")

    table = [["stage", "baseline docs/s", "hanclf docs/s"]]
    with tempfile.TemporaryDirectory(prefix="hanclf-throughput-") as tmp:
        work = Path(tmp)
        frame = pq.read_table(args.data)
        rng = np.random.default_rng(0)  # a seeded sample: some sets are sorted by label

        def sample(split: str, rows: int) -> pa.Table:
            part = frame.filter(pc.equal(frame["split"], split))
            return part.take(rng.permutation(part.num_rows)[:rows])

        train_rows, valid_rows = sample("train", args.rows), sample("valid", max(1, args.rows // 10))
        source = work / "input.parquet"
        pq.write_table(pa.concat_tables([train_rows, valid_rows]), source)
        model = args.model
        if "train" in args.stages:
            rows, model = stage_train(source, args.preset, args.rows, args.accelerator, precision, work)
            table += rows
        if model is None:  # a quick model, only for the shapes predict works with
            one_model = {"train.max_epochs": 1, "train.embeddings": "random", "model.members": 1}
            config = load_config(args.preset, one_model)
            train(source, work / "model", config, progress=False)
            model = work / "model"
        texts = train_rows.column("text").to_pylist()
        if "tokenize" in args.stages:
            table += stage_tokenize(texts, Predictor(model, "cpu"), args.repeats)
        if "predict" in args.stages:
            # --copies: a larger input from the same reviews, where start-up weighs less.
            predict_rows = pa.concat_tables([train_rows.select(["text"])] * args.copies)
            pq.write_table(predict_rows, work / "predict.parquet")
            table += stage_predict(model, work / "predict.parquet", predict_rows.num_rows, args.device,
                                   args.batch_size, args.repeats, work)

    lines = ["# hanclf throughput", "", f"- {machine(args.device)}",
             f"- {args.rows} training rows (a seeded sample) of {args.data.name}"
             f"{f', predict on {args.copies} copies of them' if args.copies > 1 else ''}; median of "
             f"{args.repeats} runs (train: one run)", "", "| stage | baseline docs/s | hanclf docs/s | ratio |",
             "|---|---:|---:|---:|"]
    for name, base, mine in table[1:]:
        ratio = f"{mine / base:.2f}×" if base else ""
        lines.append(f"| {name} | {f'{base:,.0f}' if base else ''} | {mine:,.0f} | {ratio} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
