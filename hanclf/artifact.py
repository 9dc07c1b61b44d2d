"""A trained model as one directory of plain files; loading it never unpickles anything.

    model.safetensors  weights (safetensors: tensors only, no code)
    config.yaml        the resolved config of the run (usable again as --config)
    vocab.json         {"lowercase": bool, "tokenizer": TOKENIZER_VERSION, "words": [...]}
                       (ids 0 and 1 are PAD and UNK)
    labels.json        {"labels": [...], "temperature": T}  (class id order; T fitted on valid,
                       1: none); multi-label models have "multi_label": true and "thresholds":
                       [...] (tuned on valid, one a label) instead of the temperature
    metrics.json       validation metrics of the kept epoch, data sizes, versions
    history.csv        per-epoch training and validation metrics
    data.sha256        a digest of the training data as read (what `train --resume` compares a
                       retry's data with)
"""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save as safetensors_bytes

from hanclf.config import Config, config_from_dict
from hanclf.errors import HanclfError, HanclfWarning, UsageError
from hanclf.io import write_json
from hanclf.model import HAN, Ensemble, FlatAttention, build_model, renamed_bidirectional_weights
from hanclf.tokenize import TOKENIZER_VERSION
from hanclf.vocab import Labels, Vocab

WEIGHTS, CONFIG, VOCAB, LABELS, METRICS, HISTORY, DATA_DIGEST = (
    "model.safetensors", "config.yaml", "vocab.json", "labels.json", "metrics.json", "history.csv",
    "data.sha256",
)
REQUIRED = (WEIGHTS, CONFIG, VOCAB, LABELS)
MODEL_FILES = (*REQUIRED, METRICS, HISTORY, DATA_DIGEST)


@dataclass
class Artifact:
    model: HAN | FlatAttention | Ensemble
    config: Config
    vocab: Vocab
    labels: Labels
    metrics: dict[str, Any]


def save(directory: Path, artifact: Artifact) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in artifact.model.state_dict().items()}
    # Not safetensors' save_file: it creates the file readable by its owner only (0600), so a
    # model copied to shared storage could not be loaded by anyone else.
    (directory / WEIGHTS).write_bytes(safetensors_bytes(state))
    (directory / CONFIG).write_text(
        yaml.safe_dump(artifact.config.to_dict(), sort_keys=False), encoding="utf-8"
    )
    write_json(directory / VOCAB, artifact.vocab.to_json())
    write_json(directory / LABELS, artifact.labels.to_json())
    write_json(directory / METRICS, artifact.metrics)


def missing_files(directory: Path) -> list[str]:
    """The files of a model directory that `directory` lacks (all of them if it is none)."""
    return [name for name in REQUIRED if not (directory / name).is_file()]


def check_not_model_file(path: Path) -> None:
    """Refuse an output that would replace a file of a model directory (evaluate -o
    runs/m/metrics.json would put test figures where the model's own record of training was)."""
    if path.name in MODEL_FILES and not missing_files(path.parent):
        raise UsageError(f"{path}: is a file of the model directory {path.parent}; write the "
                         "output elsewhere")


def load(directory: Path) -> Artifact:
    """Load and cross-check every file; a damaged or foreign directory is a clear error."""
    if not directory.is_dir():
        # A Ray actor or Spark executor on another machine, in a working directory of its own,
        # said "runs/yelp: not a model directory" of a path that the driver reads. The advice is
        # for such runs only: on one machine the likely cause is a mistyped path.
        where = "" if directory.is_absolute() else (
            f"; a relative path, read from {Path.cwd()} on host {socket.gethostname()} (Ray, "
            "Spark: give a path that every machine reads)")
        raise UsageError(f"{directory}: not a model directory (train one with `hanclf train`){where}")
    missing = missing_files(directory)
    if missing:
        raise UsageError(
            f"{directory}: not a hanclf model directory (missing {', '.join(missing)})"
        )
    def read(name: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse((directory / name).read_text("utf-8"))
        except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError, HanclfError) as e:
            reason = " ".join(str(e).split())  # one line: YAML's errors quote the text around them
            raise HanclfError(
                f"{directory / name}: damaged ({reason}); retrain the model or restore the file"
            ) from None

    config = read(CONFIG, lambda text: config_from_dict(yaml.safe_load(text)))
    vocab = read(VOCAB, lambda text: Vocab.from_json(json.loads(text)))
    labels = read(LABELS, lambda text: Labels.from_json(json.loads(text)))
    metrics = read(METRICS, json.loads) if (directory / METRICS).is_file() else {}
    model = build_model(config.han_config(len(vocab), len(labels)))
    try:
        state = renamed_bidirectional_weights(load_file(directory / WEIGHTS))
    except (SafetensorError, OSError) as e:
        raise HanclfError(f"{directory / WEIGHTS}: not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    if state.keys() != expected.keys():
        raise HanclfError(
            f"{directory / WEIGHTS}: tensors do not match config.yaml (missing "
            f"{sorted(expected.keys() - state.keys())}, unexpected {sorted(state.keys() - expected.keys())})"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise HanclfError(
                f"{directory / WEIGHTS}: tensor '{name}' is {tuple(tensor.shape)} {tensor.dtype}, "
                f"config.yaml, vocab.json and labels.json expect "
                f"{tuple(expected[name].shape)} {expected[name].dtype}"
            )
        if not torch.isfinite(tensor).all():
            raise HanclfError(f"{directory / WEIGHTS}: tensor '{name}' holds NaN or infinite "
                              "values; retrain the model or restore the file")
    model.load_state_dict(state)
    model.eval()
    if vocab.tokenizer != TOKENIZER_VERSION:
        trained_with = metrics.get("hanclf_version")
        pin = f", or predict with hanclf {trained_with}, which trained it" if trained_with else ""
        warnings.warn(
            f"{directory}: trained with tokenizer rules v{vocab.tokenizer}, this hanclf tokenizes "
            f"with v{TOKENIZER_VERSION}: some words split differently than in training, which "
            f"can cost accuracy; retrain the model{pin}", HanclfWarning, stacklevel=2)
    return Artifact(model, config, vocab, labels, metrics)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The HAN weights and the epoch of a Lightning checkpoint of our own run, loaded with
    weights_only=True (no arbitrary unpickling even of our own temporary files)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    return renamed_bidirectional_weights(state), int(checkpoint["epoch"])
