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
        """Images whose canvases have one shape go through the network as one batch (a batch
        of 16 NEU-DET canvases runs several times faster per image on a CPU than 16 single
        ones); each is decoded on its own."""
        placed = [letterbox(image, self.size, self.stride) for image in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (canvas, _) in enumerate(placed):
            groups.setdefault(tuple(canvas.shape), []).append(index)
        out: list[dict[str, torch.Tensor]] = [{} for _ in images]
        for indices in groups.values():
            raw = self.network(torch.cat([placed[i][0] for i in indices])).cpu()
            for row, index in zip(raw, indices, strict=True):
                out[index] = decode(row, placed[index][1], self.conf, self.iou, self.max_det)
        return out


class OnnxNetwork:
    """The exported YOLO graph in ONNX Runtime: [N, C, S, S] -> [N, 4 + classes, anchors]."""

    def __init__(self, path: Path, threads: int = 0):
        self.session = cpu_session(path, threads)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A batch runs one image at a time: the graph is traced with a batch of one."""
        rows = [
            self.session.run(None, {self.input: np.ascontiguousarray(x[i : i + 1].numpy())})[0]
            for i in range(x.shape[0])
        ]
        return torch.from_numpy(np.concatenate(rows))
