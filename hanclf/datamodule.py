"""The LightningDataModule of `train`: reads the labelled data, builds the vocabulary and labels
from the training rows, and serves bucketed batches (the pieces are in hanclf.data).

Kept apart from hanclf.data so that predict, evaluate and explain never import Lightning (2 s
of every process's start-up).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from hanclf.config import DataConfig
from hanclf.data import (
    BucketBatchSampler,
    EncodedDoc,
    LabelledDocs,
    MemberBatchSampler,
    MemberDocs,
    TokenizedDocs,
    Truncation,
    collate_labelled,
    collate_members,
    doc_size,
    row_name,
    tokenize_in_parallel,
    training_sets,
    vocabulary,
)
from hanclf.errors import HanclfError, UsageError
from hanclf.predictor import Predictor
from hanclf.vocab import Labels, Vocab
from hanclf.workers import release_freed_memory


def _encoded(parts: list[TokenizedDocs], vocab: Vocab) -> list[EncodedDoc]:
    """The documents of `parts` encoded in `vocab`, emptying `parts` as it goes."""
    docs: list[EncodedDoc] = []
    parts.reverse()
    while parts:
        docs += parts.pop().encoded(vocab)
    return docs


def softened(probs: np.ndarray, temperature: float, multi_label: bool) -> np.ndarray:
    """`probs` at `temperature`: softmax(log p / T) of each row (multi-label: sigmoid(logit p / T)
    of each probability). Above 1 it spreads them and keeps their order: a teacher's targets
    then say more than which label wins (Hinton et al., 2015)."""
    probs = probs.astype(np.float64)
    # In log space: p ** (1 / T) underflowed to 0 / 0 for a small T. A p of 0 or 1 has the
    # infinite log its limit wants.
    with np.errstate(divide="ignore", over="ignore"):
        if multi_label:
            return 1 / (1 + np.exp((np.log1p(-probs) - np.log(probs)) / temperature))
        scaled = np.log(probs) / temperature
        raised = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        return raised / raised.sum(axis=1, keepdims=True)


class HANDataModule(pl.LightningDataModule):
    """Reads the training data and builds the labels from `train` (read), then the vocabulary,
    and encodes both sets (setup).

    With `member_batches` > 1 every training step is a list of that many batches, one for each
    member of an ensemble, each member with its own order (MemberBatchSampler).

    With a `teacher` (a model directory, run on `device`), each training document's target is
    its label (one-hot, or multi-hot) mixed with the teacher's probabilities on its text at
    `teacher_temperature` (softened), `teacher_weight` of it the teacher's: distillation, e.g.
    of an ensemble into one model. Valid keeps the labels alone, so that epochs are kept on how
    often the model is right."""

    def __init__(
        self, train_path: Path, valid_path: Path | None, config: DataConfig, batch_size: int, seed: int,
        member_batches: int = 1, teacher: Path | None = None, teacher_weight: float = 1.0,
        teacher_temperature: float = 2.0, device: str = "cpu",
    ) -> None:
        super().__init__()
        self.train_path, self.valid_path = train_path, valid_path
        self.config, self.batch_size, self.seed = config, batch_size, seed
        self.member_batches = member_batches
        self.teacher_path, self.teacher_weight, self.device = teacher, teacher_weight, device
        self.teacher_temperature = teacher_temperature
        self.vocab: Vocab | None = None
        self.labels: Labels | None = None

    def read(self) -> None:
        """Read both sets and build the labels (`labels`, `train_targets`), before the slow
        part, tokenizing: what depends on the labels alone can fail early."""
        if self.labels is not None:
            return
        train, valid = training_sets(self.train_path, self.valid_path, self.config, self.seed)
        column = f"column '{self.config.label_column}'"
        unlearnt = (f" in {column}: no training row has them, so the model could never predict them; add "
                    "training rows with them, or drop those valid rows")
        if self.config.multi_label:
            self.labels = Labels.build([x for labels in train.labels for x in labels], multi_label=True)
            if not self.labels.names:
                raise UsageError(f"{train.where}: no labels at all in {column}")
            # Lists (a Parquet list column, a JSON array) are not split on the separator: a label
            # in one may hold it, and explain's CSV, which joins a document's labels with it,
            # would read as two labels.
            separator = self.config.label_separator
            joined = [name for name in self.labels.names if separator in name]
            if joined:
                row = next(train.rows[i] for i, labels in enumerate(train.labels) if joined[0] in labels)
                raise UsageError(
                    f"{train.where}: {row_name(row)} has label {joined[0]!r} in {column}, which holds the label separator "
                    f"{separator!r}, which joins a document's labels in explain's output; train with "
                    "--label-separator set to a character that no label holds, or rename the label"
                )
            valid_targets = self.labels.multi_hot(valid.labels, valid.where, "the training labels", unlearnt)
            train_targets = self.labels.multi_hot(train.labels, train.where)
        else:
            self.labels = Labels.build(train.labels)
            if len(self.labels) < 2:
                raise UsageError(
                    f"{train.where}: only one class ({self.labels.names[0]}) in {column}; "
                    "a classifier needs at least two (for tags that may or may not apply, "
                    "use --multi-label)"
                )
            valid_targets = self.labels.ids(valid.labels, valid.where, "the training labels", unlearnt)
            train_targets = self.labels.ids(train.labels, train.where)
        self.train_targets, self.valid_targets = train_targets, valid_targets
        self._texts = [train.texts, valid.texts]  # until setup encodes them
        # Loaded now: a teacher that is no model, or one of other labels, fails before tokenizing.
        self._teacher = None if self.teacher_path is None else self._checked_teacher()

    def _checked_teacher(self) -> Predictor:
        """The teacher, loaded; refused where it was trained for another task or other labels."""
        try:
            teacher = Predictor(self.teacher_path, self.device)
        except HanclfError as e:  # the message names the directory, not which flag gave it
            raise type(e)(f"--teacher {e}") from None
        kind = {False: "single-label", True: "multi-label"}
        if teacher.labels.multi_label != self.labels.multi_label:
            raise UsageError(f"--teacher {self.teacher_path}: a {kind[teacher.labels.multi_label]} "
                             f"model, and this one is {kind[self.labels.multi_label]}; give a teacher "
                             "trained for the same task")
        if teacher.labels.names != self.labels.names:  # both sorted (Labels.build): equal sets, equal order
            def listed(names: list[str]) -> str:
                return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UsageError(f"--teacher {self.teacher_path}: its labels ({listed(teacher.labels.names)}) "
                             f"are not those of the training data ({listed(self.labels.names)}); give a "
                             "teacher trained on the same labels")
        return teacher

    def _training_targets(self, texts: list[str]) -> list:
        """The targets of the training documents: their labels, or with a teacher, the labels
        mixed with its probabilities on `texts` (float32 rows)."""
        if self._teacher is None:
            return self.train_targets
        teacher, self._teacher = self._teacher, None  # its memory goes once it has labelled
        probs = softened(teacher.predict_proba(texts), self.teacher_temperature, self.labels.multi_label)
        truth = (np.asarray(self.train_targets, np.float32) if self.labels.multi_label
                 else np.eye(len(self.labels), dtype=np.float32)[self.train_targets])
        mixed = (1 - self.teacher_weight) * truth + self.teacher_weight * probs
        return list(mixed.astype(np.float32))

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        self.read()
        # Each set's texts, and then each part of its tokens, are let go as soon as they are
        # used, and their memory handed back: all of them held to the end, with the texts
        # freed but kept by the C heap, were ~2.5 KiB an IMDb review (bench/results/train-memory-cpu.md).
        texts, self._texts = self._texts, None
        train_targets = self._training_targets(texts[0])
        train_parts = tokenize_in_parallel(texts.pop(0), self.config)
        release_freed_memory()
        self.vocab = vocabulary(train_parts, self.config)
        # What the caps (max_sentences, max_words) keep from the model: train says so when much.
        self.train_truncation = sum((part.truncation() for part in train_parts), Truncation())
        self.train_set = LabelledDocs(_encoded(train_parts, self.vocab), train_targets)
        valid_parts = tokenize_in_parallel(texts.pop(), self.config)
        release_freed_memory()
        self.valid_set = LabelledDocs(_encoded(valid_parts, self.vocab), self.valid_targets)

    def _sampler(self, dataset: LabelledDocs, training: bool, stream: int = 0) -> BucketBatchSampler:
        return BucketBatchSampler(
            [doc_size(d) for d in dataset.docs], self.batch_size, shuffle=training, seed=self.seed,
            rank=self.trainer.global_rank, world_size=self.trainer.world_size, pad=training,
            stream=stream,
        )

    def train_dataloader(self) -> DataLoader:
        if self.member_batches == 1:
            sampler = self._sampler(self.train_set, training=True)
            return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate_labelled)
        samplers = [self._sampler(self.train_set, True, stream) for stream in range(self.member_batches)]
        return DataLoader(MemberDocs(self.train_set), batch_sampler=MemberBatchSampler(samplers),
                          collate_fn=collate_members)

    def val_dataloader(self) -> DataLoader:
        sampler = self._sampler(self.valid_set, training=False)
        return DataLoader(self.valid_set, batch_sampler=sampler, collate_fn=collate_labelled)
