"""The detection LightningModule (weld now, winding's non-YOLO variant later).

Hyper-parameters are plain values only, so checkpoints load with `weights_only=True`.
Under DDP validation needs no `sync_dist`: its only numbers come from the mAP metric, whose
`compute` gathers every rank's detections first, so all ranks log the same values. Training
logs stay per step and per rank (rank 0's batch; an all-reduce each step buys nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerConfig, OptimizerLRSchedulerConfig

from defects.kinds.fasterrcnn.net import Detector
from defects.kinds.schedule import configure_optimizers
from defects.metrics.detection import make_map_metric, summarize_map


class DetectionModule(L.LightningModule):
    """Faster R-CNN training with the shared optimizer/schedule partials, and COCO mAP."""

    def __init__(
        self,
        class_names: list[str],
        net: dict[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        score_threshold: float = 0.5,
        monitor: str = "val/mAP",
    ):
        super().__init__()
        # Plain values only (the partials are rebuilt from config): checkpoints load with
        # weights_only=True; the run logs the whole flat config instead.
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_names = list(class_names)
        self.detector = Detector(len(class_names) + 1, **net)
        self.val_map = make_map_metric()

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.detector(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.detector(images, targets)
        loss = sum(losses.values())
        batch_size = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log(
            "train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size
        )
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        preds = self(images)
        self.val_map.update(
            [
                {"boxes": p["boxes"].float(), "scores": p["scores"].float(), "labels": p["labels"]}
                for p in preds
            ],
            [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets],
        )

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()  # synced: every rank's images, the same on each rank
        self.val_map.reset()
        self.log_dict(summarize_map(result, self.class_names, "val"))

    def configure_optimizers(self) -> OptimizerConfig | OptimizerLRSchedulerConfig:
        return configure_optimizers(
            self, self.parameters(), self.optimizer_factory, self.scheduler_factory
        )
