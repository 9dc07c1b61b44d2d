"""Settings: defaults in dataclasses, presets in configs/*.yaml, dotted overrides on top.

The resolved config is saved with every model, so `--config MODEL_DIR/config.yaml` repeats a run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hanclf.errors import UsageError
from hanclf.model import ARCHITECTURES, DOC_POOLINGS, HANConfig
from hanclf.vocab import normalize_label


@dataclass
class DataConfig:
    # Several columns (e.g. [title, text]) are read as one text, each column's part starting
    # a sentence of its own.
    text_column: str | list[str] = "text"
    label_column: str = "label"
    id_column: str | None = None
    # Longer documents keep their first max_sentences sentences and each sentence its first
    # max_words words; ~p95 of review lengths (Yelp: 22 sentences, 36 words a sentence;
    # Amazon: 23 and 43), so little is lost.
    max_sentences: int = 30
    max_words: int = 50
    min_count: int = 2  # a word needs this many occurrences in train to get its own id
    max_vocab: int = 50_000  # most frequent words kept, PAD and UNK included
    lowercase: bool = True
    valid_fraction: float = 0.1  # used only without a split column and without --valid
    # Multi-label: each document has a set of labels (a list column, or labels joined by
    # label_separator in one string); sigmoid outputs, one tuned threshold per label.
    multi_label: bool = False
    label_separator: str = ","


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05  # linear warm-up over this share of steps, then cosine decay
    label_smoothing: float = 0.0
    # Weight of each class in the loss: null (all 1), balanced (scikit-learn's: n / (classes *
    # count), so every class weighs as much in total), or {label: weight} (unlisted labels 1).
    # Multi-label: the weight of a label's positive examples against its negatives; balanced is
    # negatives / positives.
    class_weights: str | dict[str, float] | None = None
    grad_clip: float = 5.0
    # Initial word vectors: random, word2vec (trained on the training text first, needs gensim)
    # or file (embeddings_file: a .vec / GloVe / word2vec text file of model.embed_dim numbers).
    embeddings: str = "random"
    embeddings_file: str | None = None
    freeze_embeddings: bool = False
    # Distillation: a trained model directory (e.g. an ensemble) whose probabilities on the
    # training documents this model learns from too, softened by teacher_temperature (1: as
    # the teacher gives them); teacher_weight is their share of each document's target, the
    # rest is its label.
    teacher: str | None = None
    teacher_weight: float = 1.0
    teacher_temperature: float = 2.0
    max_epochs: int = 10
    # An ensemble's members (model.members) train on the same batches in the same order, or,
    # false, each on its own draw of batches, as separately trained models would.
    shared_batches: bool = True
    # The epoch kept, and early stopping's measure: valid accuracy (micro-F1 for multi-label),
    # or macro-F1, which a rare label weighs on as much as a common one.
    select_on: str = "accuracy"
    patience: int = 3  # early stopping: epochs without a better valid select_on
    # Single-label: fit a temperature on valid after training, so that a probability of 0.8 is
    # right about 80% of the time (the label chosen never changes); false keeps the model's own.
    calibrate: bool = True
    seed: int = 42
    accelerator: str = "auto"
    devices: str | int = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # e.g. ddp: one process per device, gradients averaged
    precision: str | int = "32-true"


# The model section is HANConfig minus what the data decides.
MODEL_FIELDS_FROM_DATA = ("vocab_size", "num_classes")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "model": dict(self.model),
            "train": dataclasses.asdict(self.train),
        }

    def han_config(self, vocab_size: int, num_classes: int) -> HANConfig:
        return HANConfig(vocab_size=vocab_size, num_classes=num_classes, **self.model)


def _model_defaults() -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(HANConfig)
        if f.name not in MODEL_FIELDS_FROM_DATA
    }


def default_config() -> Config:
    return Config(model=_model_defaults())


def preset_names() -> list[str]:
    files = resources.files("hanclf.configs").iterdir()
    return sorted(p.name.removesuffix(".yaml") for p in files if p.name.endswith(".yaml"))


class _TextKeysLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping's plain keys are the text written. The keys hanclf
    reads are names, and labels of train.class_weights: YAML 1.1 read an unquoted 010 as the
    octal number 8 (0x1A as 26, 1:30 as 90), and where the data has a label 8 its weight went
    there without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        written: set[str] = set()
        for key, _ in node.value:  # before merging: a merged key's value may be overridden
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in written:  # PyYAML keeps the last without a word
                    raise yaml.constructor.ConstructorError(None, None, f"key '{key.value}' given twice",
                                                            key.start_mark)
                written.add(key.value)
        self.flatten_mapping(node)  # a merge key (<<: *defaults) is not a name
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                key.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_TextKeysLoader)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's complaint on one line, with the line and column it points at."""
    if not isinstance(e, yaml.MarkedYAMLError) or e.problem_mark is None:
        return str(e).splitlines()[0]
    parts = [(e.context, e.context_mark), (e.problem, e.problem_mark)]
    return ": ".join(f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark else what
                     for what, mark in parts if what)


def _read_text(path: Path) -> str:
    """A YAML or JSON file the user wrote: UTF-8, or a one-line error (PowerShell 5 writes UTF-16)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte {e.start} is not UTF-8); save it as UTF-8") from None


def _read_yaml(source: str) -> tuple[str, dict[str, Any]]:
    """`source` is a preset name or a path to a YAML file. A preset's bare name is the preset,
    whatever the current folder holds (data kept in a folder `yelp/` hid the yelp preset);
    `./yelp` is the file."""
    path = Path(os.path.expanduser(source))
    preset = resources.files("hanclf.configs") / f"{source}.yaml"
    is_preset = source == path.name and not path.suffix and preset.is_file()
    if not is_preset and (path.suffix in (".yaml", ".yml") or path.exists()):
        if path.is_dir():
            raise UsageError(f"{source}: a folder, not a config file; give a .yaml file or a "
                             f"preset ({', '.join(preset_names())})")
        if not path.is_file():
            raise UsageError(f"{source}: config file not found")
        text, where = _read_text(path), str(path)
    else:
        if not preset.is_file():
            raise UsageError(
                f"unknown config preset '{source}' (presets: {', '.join(preset_names())}; "
                "or give a path to a .yaml file)"
            )
        text, where = preset.read_text(encoding="utf-8"), f"preset '{source}'"
    try:
        loaded = _load_yaml(text) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{where}: not valid YAML ({_yaml_problem(e)})") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"{where}: expected a mapping of sections (data, model, train)")
    return where, loaded


def _field_types(section: str) -> dict[str, Any]:
    if section == "model":
        hints = typing.get_type_hints(HANConfig)
        return {k: v for k, v in hints.items() if k not in MODEL_FIELDS_FROM_DATA}
    return typing.get_type_hints({"data": DataConfig, "train": TrainConfig}[section])


def _number(value: Any) -> Any:
    """1e-3 as the number it is: YAML 1.1 (PyYAML) reads a number with an exponent but no dot
    as a string, in config files as in JSON weights files."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _check_type(key: str, value: Any, expected: Any) -> Any:
    allowed = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    if float in allowed:
        value = _number(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"config key {key}: must be a finite number, got {value!r}")
    for kind in allowed:
        if kind is type(None) and value is None:
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
        if kind == list[str] and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value[0] if len(value) == 1 else value
        if kind == dict[str, float] and isinstance(value, dict):
            return checked_weights(value, f"config key {key}")
    names = " or ".join(
        "null" if k is type(None) else "a list of strings" if k == list[str]
        else "a mapping of labels to numbers" if k == dict[str, float] else k.__name__
        for k in allowed
    )
    raise UsageError(f"config key {key}: expected {names}, got {value!r}")


# The keys with a fixed set of values. Accelerators and precisions: those the model runs with
# (Lightning's "true" half and double precisions leave the model's float32 inputs to a half or
# double GRU, and a TPU needs torch_xla).
CHOICES = {
    "train.embeddings": ("random", "word2vec", "file"),
    "train.select_on": ("accuracy", "macro_f1"),
    "train.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "train.precision": ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16"),
    "model.architecture": ARCHITECTURES,
    "model.doc_pooling": DOC_POOLINGS,
}


def _check_range(key: str, value: Any) -> None:
    if key in CHOICES and str(value) not in CHOICES[key]:
        raise UsageError(f"config key {key}: {value!r} is not one of {', '.join(CHOICES[key])}")
    positive = {
        "data.max_sentences", "data.max_words", "data.min_count", "data.max_vocab",
        "model.embed_dim", "model.word_hidden", "model.sent_hidden", "model.word_att_dim",
        "model.sent_att_dim", "model.members", "train.batch_size", "train.max_epochs", "train.lr",
        "train.patience", "train.num_nodes", "train.teacher_temperature",
    }
    unit = {"model.dropout", "train.label_smoothing", "train.warmup_fraction"}
    if key in positive and value <= 0:
        raise UsageError(f"config key {key}: must be > 0, got {value!r}")
    if key in unit and not 0 <= value < 1:
        raise UsageError(f"config key {key}: must be in [0, 1), got {value!r}")
    if key == "train.teacher_weight" and not 0 <= value <= 1:
        raise UsageError(f"config key {key}: must be in [0, 1], got {value!r}")
    if key == "data.label_separator" and not value:
        raise UsageError(f"config key {key}: must not be empty (e.g. ',' or '|')")
    if key == "data.valid_fraction" and not 0 < value < 1:
        raise UsageError(f"config key {key}: must be in (0, 1), got {value!r}")
    if key in ("train.weight_decay", "train.grad_clip", "train.seed") and value < 0:
        raise UsageError(f"config key {key}: must be >= 0, got {value!r}")
    if key == "train.seed" and value > 2**32 - 1:  # NumPy's seeds are 32-bit
        raise UsageError(f"config key {key}: must be at most {2**32 - 1}, got {value!r}")
    if key == "train.class_weights" and isinstance(value, str) and value != "balanced":
        raise UsageError(f"config key {key}: expected balanced, a mapping of labels to "
                         f"weights, or null; got {value!r}")


SECTIONS = ("data", "model", "train")


def _did_you_mean(key: str) -> str:
    """For an unknown key ("dropout", "optim.lr", "model.lr"), the key of that name in
    whichever section has it, as the end of a message."""
    name = key.rpartition(".")[2]
    meant = [f"{section}.{name}" for section in SECTIONS if name in _field_types(section)]
    return f"; did you mean {' or '.join(meant)}?" if meant else ""


def _apply(config: Config, key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise UsageError(f"unknown config key '{key}' (keys are SECTION.NAME with SECTION one of "
                         f"{', '.join(SECTIONS)}, e.g. data.max_words{_did_you_mean(key)})")
    types_ = _field_types(section)
    if name not in types_:
        raise UsageError(
            f"unknown config key '{key}' (known in {section}: {', '.join(sorted(types_))}"
            f"{_did_you_mean(key)})"
        )
    value = _check_type(key, value, types_[name])
    _check_range(key, value)
    if section == "model":
        config.model[name] = value
    else:
        setattr(getattr(config, section), name, value)


def parse_override(text: str) -> tuple[str, Any]:
    """'model.word_hidden=64' -> ('model.word_hidden', 64); values are read as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r}: expected KEY=VALUE, e.g. --set model.dropout=0.3")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value  # 1e-3, a string to YAML 1.1, becomes a number where one is expected


def checked_weights(weights: dict[Any, Any], where: str) -> dict[str, float]:
    """{label: weight} with labels named as hanclf names those of the data (4, 4.0 and '4' are
    the label 4) and weights checked positive; `where` names the source in messages."""
    if not weights:
        raise UsageError(f'{where}: no labels in the mapping of labels to weights, e.g. {{"1": 2.0, "5": 0.5}}')
    checked = {}
    for label, weight in weights.items():
        if isinstance(label, bool):  # a Python key (YAML's are read as text): 'True' or 'yes'?
            raise UsageError(f"{where}: label {label} is a boolean; give the label as text ('yes')")
        name = normalize_label(label)
        if name is None:
            raise UsageError(f"{where}: a label is empty")
        if name in checked:  # 4 and 4.0, or 'pos' and ' pos': one label, and the last weight won
            raise UsageError(f"{where}: label {name!r} is given twice ({label!r} is the same label); give it once")
        weight = _number(weight)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight < math.inf:
            raise UsageError(f"{where}: the weight of label {name!r} must be a positive number, got {weight!r}")
        checked[name] = float(weight)
    return checked


def class_weights_option(value: str) -> str | dict[str, float] | None:
    """train.class_weights from `--class-weights`: balanced, none, or a JSON/YAML file mapping
    labels to weights."""
    if value in ("balanced", "none"):
        return None if value == "none" else value
    path = Path(os.path.expanduser(value))
    if not path.is_file():
        raise UsageError(f"--class-weights {value}: no such file (give balanced, none, or a "
                         "JSON/YAML file of label: weight)")
    try:
        weights = _load_yaml(_read_text(path))
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid JSON or YAML ({_yaml_problem(e)})") from None
    if not isinstance(weights, dict):
        raise UsageError(f'{path}: expected a mapping of labels to weights, e.g. {{"1": 2.0, "5": 0.5}}')
    return checked_weights(weights, str(path))


def load_config(
    source: str | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Defaults, then the preset or file `source`, then `overrides` (dotted keys)."""
    config = default_config()
    if source:
        where, loaded = _read_yaml(source)
        for section, values in loaded.items():
            values = {} if values is None else values  # a section with every key commented out
            if section not in SECTIONS:
                raise UsageError(
                    f"{where}: unknown section '{section}' (sections: data, model, train)"
                )
            if not isinstance(values, dict):
                raise UsageError(f"{where}: section '{section}' is {values!r}, not a mapping of keys "
                                 f"to values (e.g. '{section}:' then an indented line 'key: value')")
            for name, value in values.items():
                _apply(config, f"{section}.{name}", value)
    for key, value in (overrides or {}).items():
        _apply(config, key, value)
    if config.train.embeddings_file and config.train.embeddings != "file":
        raise UsageError(f"config key train.embeddings_file: {config.train.embeddings_file} is read only with "
                         f"train.embeddings=file, and it is {config.train.embeddings}; pass --embeddings "
                         "PATH, or also set train.embeddings=file")
    if config.model["doc_pooling"] != "encoded" and config.model["architecture"] != "han":
        raise UsageError("config key model.doc_pooling: only the han architecture has sentence "
                         "vectors to pool; leave it at 'encoded' for the flat model")
    return config


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a saved, resolved config (as written by Config.to_dict)."""
    config = default_config()
    for section in SECTIONS:
        for name, value in (values.get(section) or {}).items():
            if section == "model" and name in MODEL_FIELDS_FROM_DATA:
                continue
            _apply(config, f"{section}.{name}", value)
    return config
