"""The LightningModule: the HAN plus its loss, optimiser, schedule and validation metrics.

Single-label: softmax and cross-entropy, scored on valid accuracy. Multi-label: a sigmoid per
label and binary cross-entropy, scored on valid micro-F1 (at the thresholds in `labels`,
0.5 while training; train tunes them on valid afterwards). Both also log macro-F1, which
train.select_on may select epochs on instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from hanclf.config import TrainConfig
from hanclf.errors import HanclfError
from hanclf.metrics import confusion_matrix, multilabel_counts, multilabel_report, report
from hanclf.model import (
    HANConfig, build_model, log_probabilities, members, probabilities, renamed_bidirectional_weights,
)
from hanclf.vocab import Labels


class HANClassifier(pl.LightningModule):
    def __init__(
        self, han: dict[str, Any], train: dict[str, Any], label_names: list[str], multi_label: bool = False,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts and lists: checkpoints stay weights_only-loadable
        # Each class's weight in the loss (training.class_weights); not part of the saved model.
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.model = build_model(HANConfig(**han))
        self.train_config = TrainConfig(**train)
        self.labels = Labels(label_names, multi_label)  # its thresholds: 0.5 until train tunes them
        self.valid_report: dict[str, Any] = {}
        self.valid_probs = np.zeros((0, len(label_names)))  # of the last validation, for tuning
        self.valid_targets = np.zeros(0)
        # Single-label: their logs, computed in log space (model.log_probabilities), which
        # train fits the temperature to: a float32 probability that underflowed to 0 has none.
        self.valid_log_probs = np.zeros((0, len(label_names)), np.float32)
        self._probs: list[torch.Tensor] = []
        self._log_probs: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def forward(self, batch: dict[str, torch.Tensor], model: torch.nn.Module | None = None) -> torch.Tensor:
        """Logits of `model` (default: the whole model, an ensemble's (M, B, C)) on `batch`."""
        model = self.model if model is None else model
        inputs = (batch[k] for k in ("tokens", "word_lengths", "sent_lengths", "sentence_slots"))
        logits, _, _ = model(*inputs)
        return logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # fp32: under bf16 autocast the log-softmax of confident logits rounds away the loss.
        if logits.dim() == 3:  # an ensemble (M, B, C): the mean of its members' own losses
            return torch.stack([self._loss(member_logits, labels) for member_logits in logits]).mean()
        # fp32 weights too: Lightning's half-precision settings convert buffers.
        weights = None if self.class_weights is None else self.class_weights.float()
        smoothing = self.train_config.label_smoothing
        if self.labels.multi_label:  # smoothing moves each label's 0/1 target towards 1/2
            targets = labels * (1 - smoothing) + smoothing / 2 if smoothing else labels
            return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=weights)
        # `labels`: class ids (B,), or with a teacher (train.teacher) target probabilities (B, C).
        if weights is None:
            return F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)
        losses = F.cross_entropy(logits.float(), labels, reduction="none", label_smoothing=smoothing)  # (B,)
        # Each document's loss weighted by its class's weight (a target's mean weight over its
        # classes). cross_entropy(weight=) also weights each class's share of the smoothing by
        # that class's weight, which pulls every document towards a heavily weighted rare class.
        doc_weights = weights[labels] if labels.dim() == 1 else labels @ weights  # (B,)
        return (losses * doc_weights).sum() / doc_weights.sum()

    def training_step(self, batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        if isinstance(batch, list):  # one batch for each member of the ensemble (shared_batches false)
            loss = torch.stack([
                self._loss(self(b, member), b["labels"]) for member, b in zip(members(self.model), batch)
            ]).mean()
            documents = sum(len(b["labels"]) for b in batch)
        else:
            loss = self._loss(self(batch), batch["labels"])
            documents = len(batch["labels"])
        if not torch.isfinite(loss):
            raise HanclfError(
                f"training loss became {loss.item()} at epoch {self.current_epoch + 1}, step "
                f"{self.global_step + 1}; lower the learning rate (e.g. --set train.lr="
                f"{self.train_config.lr / 10:g}) and train again, or undo settings far from the "
                f"defaults (train.weight_decay is {self.train_config.weight_decay:g}; an embeddings "
                "file's values)"
            )
        # The bar shows each step's loss; history.csv and the epoch's log line get its mean.
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=documents)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=documents)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val_loss", self._loss(logits, batch["labels"]), batch_size=len(batch["labels"]),
                 sync_dist=True)
        self._targets.append(batch["labels"].cpu())
        self._probs.append(probabilities(logits, self.labels.multi_label).cpu())
        if not self.labels.multi_label:  # the model's own: train fits their temperature to these
            self._log_probs.append(log_probabilities(logits).cpu())

    def on_validation_epoch_end(self) -> None:
        # A process of a distributed run may have had no validation batch at all.
        n = len(self.labels.names)
        probs = torch.cat(self._probs).numpy() if self._probs else np.zeros((0, n), np.float32)
        log_probs = torch.cat(self._log_probs).numpy() if self._log_probs else np.zeros((0, n), np.float32)
        if self._targets:
            targets = torch.cat(self._targets).numpy()
        else:
            targets = np.zeros((0, n), np.float32) if self.labels.multi_label else np.zeros(0, np.int64)
        self._probs.clear()
        self._log_probs.clear()
        self._targets.clear()
        if self.trainer.world_size > 1:
            # Each process validated its own share of the documents: metrics need all of them.
            # Shares differ in size, which all_gather_object allows.
            shares = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(shares, (probs, log_probs, targets))
            probs = np.concatenate([p for p, _, _ in shares])
            log_probs = np.concatenate([lp for _, lp, _ in shares])
            targets = np.concatenate([t for _, _, t in shares])
        self.valid_probs, self.valid_log_probs, self.valid_targets = probs, log_probs, targets
        self.valid_report = self.metrics_of(self.valid_probs, self.valid_targets)
        r = self.valid_report
        if self.labels.multi_label:
            scores = {"val_score": r["micro_f1"], "val_micro_f1": r["micro_f1"],
                      "val_subset_acc": r["subset_accuracy"]}
        else:
            scores = {"val_score": r["accuracy"], "val_acc": r["accuracy"]}
        scores["val_macro_f1"] = r["macro_f1"]
        for name, value in scores.items():
            self.log(name, value, prog_bar=name != "val_score")

    def metrics_of(self, probs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """metrics.report or multilabel_report (at this module's thresholds) of predictions."""
        predicted = self.labels.predicted(probs)
        if self.labels.multi_label:
            return multilabel_report(multilabel_counts(targets, predicted), self.labels.names)
        confusion = confusion_matrix(targets, predicted, len(self.labels.names))
        return report(confusion, self.labels.names)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning saves no random state: without it, a resumed run's dropout masks would differ
        # from those of the run it continues. Of the GPUs, the current one's state only: a run
        # may resume on a machine with fewer.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A work directory left by a run of hanclf before 951bbbb (`--resume` after an upgrade).
        checkpoint["state_dict"] = renamed_bidirectional_weights(checkpoint["state_dict"])
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"])

    def configure_optimizers(self) -> dict[str, Any]:
        c = self.train_config
        optimizer = torch.optim.AdamW(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(total * c.warmup_fraction)

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
