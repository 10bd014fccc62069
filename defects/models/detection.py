"""The detection LightningModule (weld now, winding's non-YOLO variant later).

Hyper-parameters are plain values only, so checkpoints load with `weights_only=True`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from defects.metrics.detection import make_map_metric, summarize_map
from defects.models.detector import Detector


class DetectionModule(L.LightningModule):
    """Faster R-CNN training with SGD/AdamW, warm-up + cosine schedule, and COCO mAP."""

    def __init__(
        self,
        class_names: list[str],
        net: dict[str, Any],
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_steps: int = 100,
        score_threshold: float = 0.5,
        monitor: str = "val/mAP",
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run logs the whole flat config instead
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
        result = self.val_map.compute()
        self.val_map.reset()
        self.log_dict(summarize_map(result, self.class_names, "val"))

    def configure_optimizers(self) -> dict:
        params = [p for p in self.parameters() if p.requires_grad]
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        elif hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"model.optimizer: unknown optimizer '{hp.optimizer}' (sgd or adamw)")
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(hp.warmup_steps, total // 2)

        def factor(step: int) -> float:
            if step < warmup:
                return 0.001 + (1 - 0.001) * step / max(warmup, 1)
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
