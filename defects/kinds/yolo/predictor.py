"""Letterbox -> network (eager or ONNX) -> NMS -> original pixels, for the box predictor.

A runner is what `DetectionPredictor` calls (a list of [C, H, W] images in 0..1 -> a list
of {boxes, 1-based labels, scores}); the YOLO kind differs from Faster R-CNN only here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defects.kinds.onnx_session import cpu_session
from defects.kinds.yolo.boxes import decode, letterbox

Network = Callable[[torch.Tensor], torch.Tensor]
#: what a bundle's `model.postprocess` holds (the module's hyper-parameters of the same names)
#: plus `stride` (the network's largest, for the rectangular letterbox)
POSTPROCESS_KEYS = ("imgsz", "conf", "iou", "max_det", "rect")


class YoloRunner:
    def __init__(self, network: Network, postprocess: dict[str, Any]):
        self.network = network
        self.size = int(postprocess["imgsz"])
        self.conf = float(postprocess["conf"])
        self.iou = float(postprocess["iou"])
        self.max_det = int(postprocess["max_det"])
        # Bundles written before the rectangular letterbox have neither key: square canvas.
        rect = bool(postprocess.get("rect", False))
        self.stride = int(postprocess.get("stride", 32)) if rect else None

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            canvas, place = letterbox(image, self.size, self.stride)
            raw = self.network(canvas)[0].cpu()
            out.append(decode(raw, place, self.conf, self.iou, self.max_det))
        return out


class OnnxNetwork:
    """The exported YOLO graph in ONNX Runtime: [1, C, S, S] -> [1, 4 + classes, anchors]."""

    def __init__(self, path: Path, threads: int = 0):
        self.session = cpu_session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (raw,) = self.session.run(None, {self.input: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(raw)
