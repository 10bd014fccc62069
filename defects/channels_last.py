"""Training in channels-last memory format, for every kind.

Convolutions on CPU (oneDNN) and on tensor-core GPUs run faster on NHWC tensors: measured on 2
CPU cores, forward + backward of a batch took 0.52 -> 0.41 s for yolo12n (16 x 224 x 224) and
1.03 -> 0.73 s for the gated U-Net (8 x 224 x 224). Converting the weights is enough: a
convolution whose weight is channels-last gives a channels-last output whatever its input.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class ChannelsLast(L.Callback):
    """Weights in channels-last format while fitting, back to the default format after, so
    checkpoints load anywhere and export traces the usual layout."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.to(memory_format=torch.channels_last)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.to(memory_format=torch.contiguous_format)

    def state_dict(self) -> dict[str, Any]:
        return {}
