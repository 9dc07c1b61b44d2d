"""Where hanclf's HAN spends its time per batch, on a GPU (or the CPU): milliseconds per batch
for a training step (forward, backward, clipping, AdamW), a training-mode forward alone and an
inference forward, at several batch sizes; collate's CPU time; the word GRU alone, packed and
padded two ways; and torch.profiler's top operators of a few training steps.

The training step is the one Lightning runs, written out without Lightning, so that Lightning's
own cost is the difference from bench/throughput.py's training figure.

    python bench/gpu_profile.py --data local_data/imdb_reviews.parquet [--rows 5000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.profiler import ProfilerActivity, profile

from hanclf.config import load_config
from hanclf.data import BucketBatchSampler, collate, doc_size, tokenize_texts, vocabulary
from hanclf.model import HANConfig, build_model
from hanclf.vocab import Labels


def per_batch_ms(run, batches: list, device: torch.device) -> float:
    """Mean milliseconds of run(batch) over `batches`, after two warm-up calls."""
    for batch in batches[:2]:
        run(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / len(batches)


def imdb_sample(data: Path, rows: int) -> tuple[list, torch.Tensor, HANConfig]:
    """The first `rows` training reviews of IMDb encoded as the imdb preset does, their
    sentiment as class ids, and the config of one member of the preset's model."""
    config = load_config("imdb", {})
    table = pq.read_table(data, columns=["text", "sentiment", "split"])
    table = table.filter(pc.field("split") == "train").slice(0, rows)
    tokenized = tokenize_texts(table.column("text").to_pylist(), config.data)
    vocab = vocabulary([tokenized], config.data)
    values = table.column("sentiment").to_pylist()
    targets = torch.tensor(Labels.build(values).ids(values, "data"))
    han = HANConfig(vocab_size=len(vocab), num_classes=2, **{**config.model, "members": 1})
    return tokenized.encoded(vocab), targets, han


def step_functions(model: nn.Module, device: torch.device, autocast: torch.autocast):
    """on_device, train_step and inference, each of a (collated batch, targets) pair: the
    training step is Lightning's (forward, backward, clipping, AdamW) written out."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def on_device(batch):
        inputs, labels = batch
        return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}, labels.to(device)

    def train_step(batch) -> None:
        inputs, labels = on_device(batch)
        with autocast:
            logits, _, _ = model(**inputs)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    def inference(batch) -> None:
        inputs, _ = on_device(batch)
        with torch.inference_mode(), autocast:
            logits, _, _ = model(**inputs)
            logits.float().softmax(-1).cpu()

    return on_device, train_step, inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="IMDb Parquet: text, sentiment, split")
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--steps", type=int, default=20, help="batches timed per measurement")
    parser.add_argument("--autocast", choices=["bf16", "fp16", "off"], default="bf16",
                        help="on a GPU: the autocast dtype (hanclf trains with bf16), or none")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if args.autocast == "fp16" else torch.bfloat16
    use_autocast = device.type == "cuda" and args.autocast != "off"
    autocast = torch.autocast(device.type, dtype, enabled=use_autocast)
    docs, targets, han = imdb_sample(args.data, args.rows)
    model = build_model(han).to(device)
    print(f"{device} {torch.cuda.get_device_name(0) if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, {len(docs)} documents, vocabulary {han.vocab_size}, "
          f"autocast {args.autocast if use_autocast else 'off'}")
    on_device, train_step, inference = step_functions(model, device, autocast)

    def train_forward(batch) -> None:
        inputs, _ = on_device(batch)
        with autocast:
            model(**inputs)

    sizes = [doc_size(d) for d in docs]
    print("\n| batch | collate ms | train step ms | train docs/s | train forward ms | inference ms | inference docs/s | sentences | words |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch_size in args.batch_sizes:
        groups = list(BucketBatchSampler(sizes, batch_size, shuffle=True, seed=0))[: args.steps]
        start = time.perf_counter()
        batches = [(collate([docs[i] for i in g]), targets[g]) for g in groups]
        collate_ms = 1000 * (time.perf_counter() - start) / len(groups)
        model.train()
        step_ms = per_batch_ms(train_step, batches, device)
        forward_ms = per_batch_ms(train_forward, batches, device)
        model.eval()
        inference_ms = per_batch_ms(inference, batches, device)
        sentences = sum(int((b["word_lengths"] > 0).sum()) for b, _ in batches) / len(batches)
        words = sum(int(b["word_lengths"].sum()) for b, _ in batches) / len(batches)
        print(f"| {batch_size} | {collate_ms:.1f} | {step_ms:.1f} | {batch_size / step_ms * 1000:,.0f} | "
              f"{forward_ms:.1f} | {inference_ms:.1f} | {batch_size / inference_ms * 1000:,.0f} | "
              f"{sentences:.0f} | {words:.0f} |")

    # The word GRU alone on one batch's shapes (forward + backward): packed (hanclf on the CPU);
    # padded with the bidirectional GRU over the rows and their shifted copies, 2n rows (hanclf
    # on a GPU until 361c5a0); and two one-direction GRUs over n rows each, half that
    # arithmetic (BiGRUEncoder.padded since; bench/gpu_layouts.py times the whole model).
    n, steps = 900, 50
    gru = nn.GRU(han.embed_dim, han.word_hidden, batch_first=True, bidirectional=True).to(device)
    forward_gru, backward_gru = (nn.GRU(han.embed_dim, han.word_hidden, batch_first=True).to(device)
                                 for _ in range(2))
    x = torch.randn(n, steps, han.embed_dim, device=device, requires_grad=True)
    lengths = torch.randint(1, steps + 1, (n,))

    def packed(_) -> None:
        with autocast:
            out, _ = gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        out.float().sum().backward()

    def padded_both_directions(_) -> None:
        with autocast:
            out, _ = gru(torch.cat([x, x.flip(1)]))
        out.float().sum().backward()

    def padded_one_direction_each(_) -> None:
        with autocast:
            forward, _ = forward_gru(x)
            backward, _ = backward_gru(x.flip(1))
        (forward.float().sum() + backward.float().sum()).backward()

    repeats = [None] * args.steps
    print(f"\nword GRU alone, {n} sentences x {steps} words, forward + backward, ms: packed "
          f"{per_batch_ms(packed, repeats, device):.2f}; padded, bidirectional over 2 x {n} rows "
          f"{per_batch_ms(padded_both_directions, repeats, device):.2f}; padded, two one-direction "
          f"GRUs over {n} rows each {per_batch_ms(padded_one_direction_each, repeats, device):.2f}")

    model.train()
    groups = list(BucketBatchSampler(sizes, args.batch_sizes[0], shuffle=True, seed=1))[:10]
    batches = [(collate([docs[i] for i in g]), targets[g]) for g in groups]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for batch in batches:
            train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    averages = prof.key_averages()
    keys = ["self_cpu_time_total"] + (["self_device_time_total"] if device.type == "cuda" else [])
    for key in keys:
        print(f"\n10 training steps at batch {args.batch_sizes[0]}, top operators by {key}:")
        try:
            print(averages.table(sort_by=key, row_limit=14, max_name_column_width=40))
        except (AttributeError, KeyError, ValueError) as e:  # the key's name differs by version
            print(f"no table by {key}: {e}")


if __name__ == "__main__":
    main()
