"""The Faster R-CNN inference path: the network itself (eager) or its ONNX graph, behind the
box kinds' shared `DetectionPredictor`.

Resizing and normalisation live inside the network (torchvision's transform), so both
runners take [C, H, W] images in 0..1 and return boxes in the image's own pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch

from defects.kinds.fasterrcnn.export import INPUT, OUTPUTS
from defects.kinds.onnx_session import cpu_session


class OnnxDetector:
    """An exported detector behind `Detector`'s eval interface: images in, detections out."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.session = cpu_session(path, threads)
        self.channels: int = self.session.get_inputs()[0].shape[0]

    @torch.inference_mode()
    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image, in its own pixels, as `Detector` returns them in eval mode."""
        results = []
        for image in images:
            if image.dim() != 3 or image.shape[0] != self.channels:
                raise ValueError(
                    f"expected a [{self.channels},H,W] image, got {tuple(image.shape)}"
                )
            if not image.is_floating_point():
                raise TypeError(f"expected a float image in 0..1, got {image.dtype}")
            array = image.detach().to("cpu", torch.float32).contiguous().numpy()
            boxes, labels, scores = self.session.run(list(OUTPUTS), {INPUT: array})
            results.append(
                {
                    "boxes": torch.from_numpy(boxes),
                    "labels": torch.from_numpy(labels).to(torch.int64),
                    "scores": torch.from_numpy(scores),
                }
            )
        return results
