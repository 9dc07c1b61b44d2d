"""Training-step and inference time of hanclf's HAN on a GPU with other layouts of the padded
GRU encoder (BiGRUEncoder on a GPU), to see whether any is worth moving into the model:

- shifted: hanclf's until 361c5a0; one bidirectional GRU over the rows and a copy shifted so
  that each row's words end it (2R rows, each direction keeps the half it read in order).
- one_each: BiGRUEncoder.padded since; a forward GRU over the rows and a backward GRU over each
  row reversed within its length (R rows each: half the arithmetic, two calls).
- ...+bucketsK: the word level's rows sorted by length and run in K groups of equal rows, each
  padded to its own longest sentence only (less padding, K times the sequential steps).
- hanclf: BiGRUEncoder.forward as it is: one_each, with groups by length in training where the
  rows are many (BiGRUEncoder.grouped).

Every layout gives the same outputs (checked on the CPU in fp32 before timing); only the time
differs. IMDb reviews, the imdb preset's model (one member), bf16 autocast on a GPU.

    python bench/gpu_layouts.py --data local_data/imdb_reviews.parquet [--rows 8192]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_profile import imdb_sample, per_batch_ms, step_functions  # noqa: E402

from hanclf import model as han_model  # noqa: E402
from hanclf.data import BucketBatchSampler, collate, doc_size  # noqa: E402
from hanclf.model import BiGRUEncoder, build_model  # noqa: E402

ONE_EACH = BiGRUEncoder.padded


def shifted(self: BiGRUEncoder, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """padded's result as hanclf computed it until 361c5a0, with `bigru` (add_bidirectional)."""
    R, T, _ = x.shape
    H = self.forward_gru.hidden_size
    steps = torch.arange(T, device=x.device)
    shift = (T - lengths).unsqueeze(1)  # (R, 1) padding slots of each row
    shifted = x.gather(1, ((steps - shift) % T).unsqueeze(-1).expand_as(x))  # words at the end
    out, _ = self.bigru(torch.cat([x, shifted]))  # (2R, T, 2H)
    backward = out[R:, :, H:].gather(1, ((steps + shift) % T).unsqueeze(-1).expand(R, T, H))
    is_word = (steps < lengths.unsqueeze(1)).unsqueeze(-1)
    return torch.cat([out[:R, :, :H], backward], dim=-1) * is_word


def add_bidirectional(encoder: BiGRUEncoder) -> None:
    """Gives `encoder` bigru: one bidirectional GRU holding its two directions' weights."""
    g = encoder.forward_gru
    bigru = nn.GRU(g.input_size, g.hidden_size, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for suffix, direction in (("", encoder.forward_gru), ("_reverse", encoder.backward_gru)):
            for p in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                getattr(bigru, p + suffix).copy_(getattr(direction, p))
    encoder.bigru = bigru.to(g.weight_hh_l0.device)


def bucketed(inner, groups: int):
    """A layout that runs `inner` on the rows sorted by length, in `groups` groups of equal rows,
    each cut to its own longest row (one host sync a batch for the groups' lengths)."""

    def padded(self: BiGRUEncoder, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        R, T, _ = x.shape
        order = lengths.argsort(descending=True)
        bounds = [R * g // groups for g in range(groups + 1)]
        longest = lengths[order[torch.tensor(bounds[:-1], device=x.device)]].tolist()
        out = x.new_zeros(R, T, 2 * self.forward_gru.hidden_size)
        for start, end, t in zip(bounds, bounds[1:], longest):
            rows = order[start:end]
            out[rows, :t] = inner(self, x[rows, :t], lengths[rows]).to(out.dtype)
        return out

    return padded


LAYOUTS = {  # the padded path's forward(self, x, lengths) of each
    "shifted": shifted,
    "one_each": ONE_EACH,
    "shifted+buckets2": bucketed(shifted, 2),
    "one_each+buckets2": bucketed(ONE_EACH, 2),
    "one_each+buckets4": bucketed(ONE_EACH, 4),
    "hanclf": BiGRUEncoder.forward,
}


def use_layout(model: nn.Module, name: str) -> None:
    """The word encoder takes layout `name`; the sentence encoder too, bar the buckets (its
    documents are already batched by size)."""
    layout = LAYOUTS[name]
    sentence_layout = {"shifted": shifted, "hanclf": layout}.get(name.split("+")[0], ONE_EACH)
    model.word_encoder.forward = layout.__get__(model.word_encoder)
    model.sent_encoder.forward = sentence_layout.__get__(model.sent_encoder)


def check_same_outputs(model: nn.Module, batch: dict) -> None:
    """Every layout's logits equal shifted's, fp32 on the CPU with the padded path forced, in
    training mode without dropout (where hanclf groups rows; here from 2 x 50 rows on)."""
    cpu_model = build_model(dataclasses.replace(model.config, dropout=0.0))
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    for encoder in (cpu_model.word_encoder, cpu_model.sent_encoder):
        add_bidirectional(encoder)
    cpu_model.train()
    packed_on, han_model.packed_on = han_model.packed_on, lambda device: False
    rows_per_group, han_model.ROWS_PER_LENGTH_GROUP = han_model.ROWS_PER_LENGTH_GROUP, 50
    try:
        results = {}
        for name in LAYOUTS:
            use_layout(cpu_model, name)
            with torch.no_grad():
                results[name] = cpu_model(**batch)[0]
    finally:
        han_model.packed_on = packed_on
        han_model.ROWS_PER_LENGTH_GROUP = rows_per_group
    for name, logits in results.items():
        gap = (logits - results["shifted"]).abs().max().item()
        print(f"{name}: largest logit gap to shifted {gap:.2e}")
        assert gap < 1e-4, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="IMDb Parquet: text, sentiment, split")
    parser.add_argument("--rows", type=int, default=8_192)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--steps", type=int, default=10, help="batches timed per measurement")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    docs, targets, han = imdb_sample(args.data, args.rows)
    model = build_model(han).to(device)
    check_same_outputs(model, collate(docs[:32]))
    for encoder in (model.word_encoder, model.sent_encoder):
        add_bidirectional(encoder)
    print(f"{device} {torch.cuda.get_device_name(0) if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, {len(docs)} documents")
    sizes = [doc_size(d) for d in docs]
    _, train_step, inference = step_functions(model, device, autocast)

    print("\n| batch | layout | train step ms | train docs/s | inference ms | inference docs/s |")
    print("|---:|---|---:|---:|---:|---:|")
    for batch_size in args.batch_sizes:
        groups = list(BucketBatchSampler(sizes, batch_size, shuffle=True, seed=0))[: args.steps]
        batches = [(collate([docs[i] for i in g]), targets[g]) for g in groups]
        for name in args.layouts:
            use_layout(model, name)
            model.train()
            step_ms = per_batch_ms(train_step, batches, device)
            model.eval()
            inference_ms = per_batch_ms(inference, batches, device)
            print(f"| {batch_size} | {name} | {step_ms:.1f} | {batch_size / step_ms * 1000:,.0f} | "
                  f"{inference_ms:.1f} | {batch_size / inference_ms * 1000:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
