"""The toy kind's network: image -> one presence logit per class, at a fixed 64x64 view."""

from __future__ import annotations

import torch
from torch import nn

VIEW = (64, 64)


def to_view(image: torch.Tensor) -> torch.Tensor:
    """A [C, H, W] image at the network's view size (training and prediction alike)."""
    return nn.functional.interpolate(image[None], size=VIEW, mode="bilinear")[0]


class ToyNet(nn.Module):
    """Image -> one presence logit per class."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=4), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
