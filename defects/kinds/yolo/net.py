"""The YOLO network: an Ultralytics DetectionModel built from a yaml dict, raw outputs only.

`YoloNet(x)` maps a letterboxed batch [B, C, S, S] in 0..1 to the head's decoded output
[B, 4 + classes, anchors] (centre-x, centre-y, width, height in letterbox pixels, then class
probabilities) in eval mode, and to the head's raw dict (what the loss takes) in train mode.
Letterbox and NMS live outside (`boxes.py`) so eager and ONNX share them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from defects.kinds.yolo import adapter


class YoloNet(nn.Module):
    def __init__(self, model_yaml: dict[str, Any], num_classes: int, channels: int = 3):
        super().__init__()
        self.model_yaml = dict(model_yaml)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.model = adapter.detection_model(self.model_yaml, self.num_classes, self.channels)

    @property
    def strides(self) -> list[int]:
        return [int(s) for s in adapter.detect_head(self.model).stride.tolist()]

    def forward(self, x: torch.Tensor) -> Any:
        out = self.model(x)
        if self.training:
            return out
        return out[0] if isinstance(out, tuple) else out

    def export_mode(self, on: bool = True, dynamic: bool = False) -> None:
        """The head returns its decoded tensor alone (what a traced graph needs); `dynamic`
        makes it rebuild its anchor grid from the input's shape in the graph."""
        head = adapter.detect_head(self.model)
        head.export = on
        head.format = "onnx" if on else None
        head.dynamic = bool(on and dynamic)

    def fuse(self) -> YoloNet:
        """Fold BatchNorm into the convolutions (and re-parameterise RepConv) for inference:
        about a quarter less time per frame on CPU, same outputs up to float rounding.
        In place; only for eval-mode networks that will not train again."""
        adapter.fuse(self.model)
        return self
