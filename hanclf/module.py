"""The LightningModule: the HAN plus its loss, optimiser, schedule and validation metrics."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from hanclf.config import TrainConfig
from hanclf.errors import HanclfError
from hanclf.metrics import confusion_matrix, report
from hanclf.model import HANConfig, build_model


class HANClassifier(pl.LightningModule):
    def __init__(self, han: dict[str, Any], train: dict[str, Any], label_names: list[str]) -> None:
        super().__init__()
        self.save_hyperparameters()  # plain dicts and lists: checkpoints stay weights_only-loadable
        self.model = build_model(HANConfig(**han))
        self.train_config = TrainConfig(**train)
        self.label_names = label_names
        self.valid_report: dict[str, Any] = {}
        self._valid_true: list[torch.Tensor] = []
        self._valid_pred: list[torch.Tensor] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, _, _ = self.model(batch["tokens"], batch["word_lengths"], batch["sent_lengths"])
        return logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # fp32: under bf16 autocast the log-softmax of confident logits rounds away the loss.
        return F.cross_entropy(
            logits.float(), labels, label_smoothing=self.train_config.label_smoothing
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch), batch["labels"])
        if not torch.isfinite(loss):
            raise HanclfError(
                f"training loss became {loss.item()} at epoch {self.current_epoch + 1}, step "
                f"{self.global_step + 1}; lower the learning rate (e.g. --set train.lr="
                f"{self.train_config.lr / 10:g}) and train again"
            )
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.log("val_loss", self._loss(logits, batch["labels"]), batch_size=len(batch["labels"]))
        self._valid_true.append(batch["labels"].cpu())
        self._valid_pred.append(logits.argmax(-1).cpu())

    def on_validation_epoch_end(self) -> None:
        y_true = torch.cat(self._valid_true).numpy()
        y_pred = torch.cat(self._valid_pred).numpy()
        self._valid_true.clear()
        self._valid_pred.clear()
        confusion = confusion_matrix(y_true, y_pred, len(self.label_names))
        self.valid_report = report(confusion, self.label_names)
        self.log("val_acc", self.valid_report["accuracy"], prog_bar=True)
        self.log("val_macro_f1", self.valid_report["macro_f1"], prog_bar=True)

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
