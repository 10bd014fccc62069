"""The YOLO training recipe, written for Lightning: parameter groups, warm-up, EMA.

What Ultralytics' trainer does, as documented behaviour (not its code):
- three parameter groups: conv/linear weights with weight decay, norm weights and all biases
  without it; decay scaled by (batch x accumulate) / nominal batch;
- per-iteration warm-up over max(warmup_epochs x batches, warmup_min_iters) optimizer
  iterations: weight and norm groups' rate rises from 0, the bias group's falls from
  `warmup_bias_lr`, both to the epoch's scheduled rate; momentum (Adam's beta1) rises from
  `warmup_momentum`; afterwards a linear decay to `lrf` x lr over the epochs;
- an exponential moving average of the weights, its decay ramping up as 1 - exp(-n / tau),
  used for validation and saved in the bundle.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch import nn

NORM_TYPES = tuple(t for name, t in vars(nn).items() if isinstance(t, type) and "Norm" in name)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[decayed weights, norm weights, biases]: decay only where it regularises."""
    decayed, norms, biases = [], [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name == "bias":
                biases.append(param)
            elif isinstance(module, NORM_TYPES):
                norms.append(param)
            else:
                decayed.append(param)
    return [
        {"params": decayed, "weight_decay": weight_decay, "name": "weights"},
        {"params": norms, "weight_decay": 0.0, "name": "norms"},
        {"params": biases, "weight_decay": 0.0, "name": "biases"},
    ]


def momentum_key(optimizer: torch.optim.Optimizer) -> str:
    return "betas" if "betas" in optimizer.defaults else "momentum"


class WarmupOptions(TypedDict, total=False):
    """The optional fields of `Warmup` a config may set (`model.warmup`)."""

    momentum: float
    warmup_epochs: float
    warmup_min_iters: int
    warmup_momentum: float
    warmup_bias_lr: float


@dataclass
class Warmup:
    """Per-iteration learning rate and momentum of each group (see module docstring)."""

    lr: float
    epochs: int
    iters_per_epoch: int
    lrf: float = 0.01
    momentum: float = 0.937
    warmup_epochs: float = 3.0
    warmup_min_iters: int = 100
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1

    @property
    def warmup_iters(self) -> int:
        iters = round(self.warmup_epochs * self.iters_per_epoch)
        return max(iters, self.warmup_min_iters) if self.warmup_epochs > 0 else 0

    def epoch_factor(self, epoch: int, budget: float = 0.0) -> float:
        """Linear decay from 1 to `lrf` over the run: over the epochs, or over the share of a
        wall-clock budget used (`budget`, 0..1), whichever is further along."""
        progress = max(epoch / max(self.epochs, 1), budget)
        return max(1 - progress, 0.0) * (1 - self.lrf) + self.lrf

    def apply(
        self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int, budget: float = 0.0
    ) -> None:
        target = self.lr * self.epoch_factor(epoch, budget)
        key = momentum_key(optimizer)
        warm = iteration < self.warmup_iters
        t = iteration / max(self.warmup_iters, 1)
        for group in optimizer.param_groups:
            if warm:
                start = self.warmup_bias_lr if group.get("name") == "biases" else 0.0
                group["lr"] = float(np.interp(t, [0, 1], [start, target]))
                beta = float(np.interp(t, [0, 1], [self.warmup_momentum, self.momentum]))
            else:
                group["lr"] = target
                beta = self.momentum
            if key == "betas":
                group["betas"] = (beta, group["betas"][1])
            else:
                group["momentum"] = beta


class ModelEMA(nn.Module):
    """Exponential moving average of a model's parameters and float buffers.

    An nn.Module itself, so the averaged weights and the update count are in the
    LightningModule's state_dict: checkpoints (and the best one reloaded) carry them.
    """

    updates: torch.Tensor  # a buffer: optimizer steps averaged in

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau = decay, tau
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-int(self.updates) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        live = model.state_dict()
        floats, targets = [], []
        for name, ema in self.module.state_dict().items():
            if ema.dtype.is_floating_point:
                floats.append(ema)
                targets.append(live[name].detach())
            else:
                ema.copy_(live[name])
        # ema <- d * ema + (1 - d) * live, in one fused call over ~700 tensors (2x faster on
        # yolo12n than a Python loop, which costs more than the arithmetic).
        torch._foreach_lerp_(floats, targets, 1 - d)

    def train(self, mode: bool = True) -> ModelEMA:
        """The average is never trained: it stays in eval mode (BatchNorm uses its stats)."""
        super().train(False)
        return self
