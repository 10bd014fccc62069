"""Optimizer and learning-rate schedule shared by every kind, built from `_partial_` configs.

`configs/optimizer/*.yaml` and `configs/scheduler/*.yaml` give `functools.partial`s; a
LightningModule hands them its parameters and the step count in `configure_optimizers`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities.types import (
    LRSchedulerTypeUnion,
    OptimizerConfig,
    OptimizerLRSchedulerConfig,
)


def budget_share(trainer: Any) -> Callable[[], float] | None:
    """The share of the trainer's wall-clock budget (`trainer.max_time`) used so far, read
    from Lightning's own `Timer` (the clock that stops the run), or None without a budget.

    A schedule over `max_epochs` alone stays near its peak when the budget stops the run
    first (a 25-minute run that reaches epoch 30 of 100 ends at 70 % of the peak lr): each
    schedule here follows whichever of the two is further along."""
    timer = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, Timer)), None)
    if timer is None:
        return None
    remaining = timer.time_remaining("train")
    if remaining is None:
        return None
    total = remaining + timer.time_elapsed("train")  # the whole budget, a resumed run's too
    if total <= 0:
        return None

    def share() -> float:
        return min(max(timer.time_elapsed("train") / total, 0.0), 1.0)

    return share


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 100,
    warmup_start: float = 0.001,
    floor: float = 0.05,
    budget: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from `warmup_start` x lr, then a cosine down to `floor` x lr, per step.
    Warm-up takes at most half of a short run. With a `budget` (`budget_share`) the cosine
    follows the steps or the wall-clock budget, whichever is further along."""
    total = max(int(total_steps), 1)
    warmup = min(int(warmup_steps), total // 2)

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_start + (1 - warmup_start) * step / max(warmup, 1)
        progress = (step - warmup) / max(total - warmup, 1)
        if budget is not None:
            progress = max(progress, budget())
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
    extra = {}
    budget = budget_share(module.trainer)
    if budget is not None and "budget" in inspect.signature(scheduler).parameters:
        extra["budget"] = budget
    return {
        "optimizer": built,
        "lr_scheduler": {
            "scheduler": scheduler(built, total_steps=total, **extra),
            "interval": "step",
        },
    }
