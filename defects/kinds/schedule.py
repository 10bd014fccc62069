"""Optimizer and learning-rate schedule shared by every kind, built from `_partial_` configs.

`configs/optimizer/*.yaml` and `configs/scheduler/*.yaml` give `functools.partial`s; a
LightningModule hands them its parameters and the step count in `configure_optimizers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch.utilities.types import (
    LRSchedulerTypeUnion,
    OptimizerConfig,
    OptimizerLRSchedulerConfig,
)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 100,
    warmup_start: float = 0.001,
    floor: float = 0.05,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from `warmup_start` x lr, then a cosine down to `floor` x lr, per step.
    Warm-up takes at most half of a short run."""
    total = max(int(total_steps), 1)
    warmup = min(int(warmup_steps), total // 2)

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_start + (1 - warmup_start) * step / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def configure_optimizers(
    module: Any,
    params: Iterable[torch.nn.Parameter],
    optimizer: Callable[..., torch.optim.Optimizer] | None,
    scheduler: Callable[..., LRSchedulerTypeUnion] | None,
) -> OptimizerConfig | OptimizerLRSchedulerConfig:
    """Lightning's optimizer dict from the module's partials (scheduler stepped per batch)."""
    if optimizer is None:
        raise ValueError("model.optimizer: no optimizer configured (e.g. optimizer=adamw)")
    built = optimizer(params=[p for p in params if p.requires_grad])
    if scheduler is None:
        return {"optimizer": built}
    total = int(module.trainer.estimated_stepping_batches)
    return {
        "optimizer": built,
        "lr_scheduler": {"scheduler": scheduler(built, total_steps=total), "interval": "step"},
    }
