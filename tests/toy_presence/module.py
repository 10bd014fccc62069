"""The toy kind's LightningModule: multi-label presence from the box DataModule's targets."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from defects.kinds.schedule import configure_optimizers
from tests.toy_presence.net import ToyNet, to_view


class ToyModule(L.LightningModule):
    def __init__(
        self,
        class_names: list[str],
        optimizer: Any = None,
        scheduler: Any = None,
        monitor: str = "val/accuracy",
    ):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.net = ToyNet(len(class_names))

    @staticmethod
    def presence(targets: list[dict], k: int) -> torch.Tensor:
        out = torch.zeros(len(targets), k)
        for i, t in enumerate(targets):
            out[i, t["labels"] - 1] = 1.0
        return out

    def _step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets = batch
        x = torch.stack([to_view(i) for i in images])
        logits = self.net(x)
        truth = self.presence(targets, logits.shape[1])
        return nn.functional.binary_cross_entropy_with_logits(logits, truth), logits, truth

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch)
        self.log("train/loss", loss, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, logits, truth = self._step(batch)
        accuracy = ((logits > 0).float() == truth).float().mean()
        self.log("val/accuracy", accuracy, batch_size=len(batch[0]))

    def configure_optimizers(self) -> dict:
        return configure_optimizers(
            self, self.parameters(), self.optimizer_factory, self.scheduler_factory
        )
