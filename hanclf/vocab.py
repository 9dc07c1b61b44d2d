"""Word and label tables, built from training data only and saved as plain JSON."""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hanclf.errors import UsageError
from hanclf.model import PAD, UNK
from hanclf.tokenize import TOKENIZER_VERSION

PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"


class Vocab:
    """Maps words to ids; id 0 is padding, id 1 every word not in the table. `tokenizer`: the
    TOKENIZER_VERSION whose rules made the words."""

    def __init__(self, words: Sequence[str], lowercase: bool, tokenizer: int = TOKENIZER_VERSION) -> None:
        self.words = [PAD_TOKEN, UNK_TOKEN, *words]
        self.lowercase = lowercase
        self.tokenizer = tokenizer
        self.index = {w: i for i, w in enumerate(self.words)}
        assert self.index[PAD_TOKEN] == PAD and self.index[UNK_TOKEN] == UNK

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], min_count: int, max_size: int, lowercase: bool
    ) -> Vocab:
        """The words seen at least min_count times (lowercased already, if `lowercase`)."""
        # Most frequent first; ties alphabetical so the same data always gives the same ids.
        frequent = (w for w, c in counts.items() if c >= min_count)
        kept = sorted(frequent, key=lambda w: (-counts[w], w))
        return cls(kept[: max(0, max_size - 2)], lowercase)

    def __len__(self) -> int:
        return len(self.words)

    def to_json(self) -> dict[str, Any]:
        return {"lowercase": self.lowercase, "tokenizer": self.tokenizer, "words": self.words[2:]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        # Models saved before the version was kept (no release had come out) count as version 1.
        return cls(data["words"], bool(data["lowercase"]), int(data.get("tokenizer", 1)))


_INTEGER = re.compile(r"0|-?[1-9][0-9]*", re.ASCII)
_WHOLE_DECIMAL = re.compile(r"(-?[0-9]+)\.0+", re.ASCII)


def as_text(value: Any) -> str:
    """str(value), with bytes read as UTF-8: Hive and Impala write strings as Parquet's plain
    binary, whose b'pos' is the label pos, not "b'pos'"."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def normalize_label(value: Any) -> str | None:
    """Labels are compared as text: 4, 4.0 and '4' are the same label; None/NaN/'' are missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = as_text(value).strip()
    # "4.0" from a CSV written out of a float column is the label 4, as the float 4.0 is.
    whole = _WHOLE_DECIMAL.fullmatch(text)
    if whole:
        text = whole[1]
    return text or None


class NotALabelSet(ValueError):
    """A multi-label cell that is neither labels nor a list of them (a mapping, a nested list);
    `index`: its place among the cells normalize_labels was given."""

    def __init__(self, value: Any, part: Any) -> None:
        kind = "a mapping" if isinstance(part, Mapping) else "a list within a list"
        shown = str(value)
        super().__init__(f"holds {kind} ({shown[:60]}{'...' if len(shown) > 60 else ''}), not a "
                         "label or a list of labels")
        self.index = 0


def normalize_label_set(value: Any, separator: str) -> list[str]:
    """A multi-label cell as its labels: a list (Parquet list, JSON array) or a string of labels
    joined by `separator` ("food,service"). Null, "" and [] are the empty set: no label applies.
    A mapping or a list within the list is refused (NotALabelSet): as text, {'food': True, ...}
    was one label."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, (str, bytes)):
        value = _listed(as_text(value))
    parts = value.split(separator) if isinstance(value, str) else value
    if isinstance(parts, Mapping) or not isinstance(parts, Sequence):
        parts = [parts]
    for part in parts:
        if isinstance(part, (Mapping, list, tuple, np.ndarray)):
            raise NotALabelSet(value, part)
    return sorted({label for label in map(normalize_label, parts) if label is not None})


def normalize_labels(values: Iterable[Any], multi_label: bool, separator: str) -> list:
    """The cells of a label column as labels: each a label (None where missing) or, multi-label,
    a sorted list of labels (see normalize_label_set)."""
    if not multi_label:
        return [normalize_label(v) for v in values]
    sets = []
    for index, value in enumerate(values):
        try:
            sets.append(normalize_label_set(value, separator))
        except NotALabelSet as error:
            error.index = index
            raise
    return sets


def _listed(text: str) -> str | list | dict:
    """A list written out as text, as JSON writes it ('["food", "price"]', with its escapes:
    "\\ud83d\\udd25" one emoji, "UI\\/UX", null) or pandas' to_csv writes a list column
    ("['food', 'price']"), as that list; any other text as it is."""
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):  # a JSON object, as a mixed JSON Lines batch reads one
        with contextlib.suppress(ValueError, RecursionError):
            parsed = json.loads(stripped)
            return parsed if isinstance(parsed, dict) else text
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return text
    try:
        parsed = json.loads(stripped)
    except (ValueError, RecursionError):
        try:
            parsed = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
    return parsed if isinstance(parsed, list) else text


class Labels:
    """The classes a model predicts, in id order. Integer labels (e.g. stars) sort numerically
    and are written back as integers.

    Multi-label models also keep the probability threshold of each label, tuned on valid;
    single-label ones the temperature of their probabilities (model.probabilities), fitted on
    valid (1: none)."""

    def __init__(
        self, names: Sequence[str], multi_label: bool = False, thresholds: Sequence[float] | None = None,
        temperature: float = 1.0,
    ) -> None:
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.numeric = all(_is_int(n) for n in self.names)
        self.multi_label = multi_label
        self.thresholds = list(thresholds) if thresholds is not None else [0.5] * len(self.names)
        if len(self.thresholds) != len(self.names):
            raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.names)} labels")
        self.temperature = temperature

    @classmethod
    def build(cls, values: Iterable[str], multi_label: bool = False) -> Labels:
        distinct = set(values)
        numeric = all(_is_int(v) for v in distinct)
        return cls(sorted(distinct, key=int if numeric else str), multi_label)

    def __len__(self) -> int:
        return len(self.names)

    def ids(self, values: Sequence[str], where: str, known_as: str = "the model's labels", advice: str = "") -> list[int]:
        unknown = sorted(set(values) - self.index.keys())
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise UsageError(
                f"{where}: label(s) {shown} not among {known_as} ({', '.join(self.names)})"
                + (joined_sets_hint(unknown, self.multi_label) or advice)
            )
        return [self.index[v] for v in values]

    def multi_hot(
        self, sets: Sequence[list[str]], where: str, known_as: str = "the model's labels", advice: str = ""
    ) -> np.ndarray:
        """(len(sets), len(labels)) float32, 1 where the document has the label."""
        targets = np.zeros((len(sets), len(self.names)), dtype=np.float32)
        for row, labels in enumerate(sets):
            targets[row, self.ids(labels, where, known_as, advice)] = 1
        return targets

    def cuts(self, threshold: float | None = None) -> list[float]:
        """The probability each label needs to be predicted (multi-label): its own threshold,
        tuned on valid, or `threshold` for every label where one is given (--threshold)."""
        return list(self.thresholds) if threshold is None else [threshold] * len(self.names)

    def predicted(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """What probabilities (documents, labels) predict: the id of the most probable label,
        (documents,); or, multi-label, (documents, labels) True where a label's probability is
        at or above its cut (`cuts(threshold)`). The one place a label is chosen (predict,
        explain, evaluate, validation), compared in float64 as thresholds are tuned: in
        float32, p == float32(0.35) would pass a cut of 0.35 that it is below."""
        if self.multi_label:
            return probs.astype(np.float64) >= np.asarray(self.cuts(threshold), dtype=np.float64)
        return probs.argmax(-1)

    def chosen(self, probs: np.ndarray, threshold: float | None = None) -> list[int]:
        """Ids of the predicted labels for one document's probabilities (see `predicted`): the
        most probable one, or, multi-label, every label at or above its cut, in id order."""
        if self.multi_label:
            return np.flatnonzero(self.predicted(probs[np.newaxis], threshold)[0]).tolist()
        return [int(np.argmax(probs))]

    def in_order(self, names: Iterable[str]) -> list[str]:
        """`names` in id order, labels the model does not know last."""
        return sorted(names, key=lambda n: (self.index.get(n, len(self.names)), n))

    def differing_in_case(self) -> list[list[str]]:
        """Groups of labels that differ only in case (pos, Pos, POS), in id order."""
        groups: dict[str, list[str]] = {}
        for name in self.names:
            groups.setdefault(name.casefold(), []).append(name)
        return [names for names in groups.values() if len(names) > 1]

    def value(self, name: str) -> int | str:
        return int(name) if self.numeric else name

    def to_json(self) -> dict[str, Any]:
        if not self.multi_label:
            return {"labels": self.names, "temperature": self.temperature}
        return {"labels": self.names, "multi_label": True, "thresholds": self.thresholds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Labels:
        multi_label = bool(data.get("multi_label", False))
        thresholds = [float(t) for t in data["thresholds"]] if multi_label else None
        temperature = float(data.get("temperature", 1.0))  # models saved before calibration: 1
        if not (temperature > 0 and math.isfinite(temperature)):  # NaN fails both
            raise ValueError(f"temperature {temperature}: must be a number above 0")
        return cls(data["labels"], multi_label, thresholds, temperature)


def joined_sets_hint(unknown: Iterable[str], multi_label: bool) -> str:
    """The end of a message on labels a multi-label model does not know, where they look like
    sets of labels joined by a separator other than the one they were split on."""
    if multi_label and any(sep in label for label in unknown for sep in ",;|"):
        return "; sets of labels joined by a separator not read as one? --label-separator names it"
    return ""


def _is_int(text: str) -> bool:
    """Whether `text` is an int64 written the one way Python writes it: "007" or "01" beside
    "1" must come back as written, not as 7 or 1."""
    return _INTEGER.fullmatch(text) is not None and -(2**63) <= int(text) < 2**63
