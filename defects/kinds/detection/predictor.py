"""Faster R-CNN predictor: decode -> Detector (eager) or its ONNX graph -> score cut.

Resizing and normalisation live inside the network (torchvision's transform), so both
backends return boxes in the original image's pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from defects.data.transforms import to_tensor
from defects.kinds.base import Predictor
from defects.results import Detections

Runner = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


class DetectionPredictor(Predictor[Detections]):
    """`predict(image)` -> Detections scoring at least `thresholds["score"]`."""

    main_threshold = "score"

    def __init__(
        self, meta: dict[str, Any], runner: Runner, backend: str = "eager", device: str = "cpu"
    ):
        super().__init__(meta, backend)
        self.runner = runner
        self.device = device

    @property
    def score_threshold(self) -> float:
        return float(self.thresholds["score"])

    @torch.inference_mode()
    def detect_all(self, images: Sequence[Any]) -> list[Detections]:
        """Every detection the network keeps (its own floor, `box_score_thresh`): the ranking
        mAP is computed on; `predict_batch` is this cut at the score threshold."""
        tensors = [to_tensor(self.decode(image)).to(self.device) for image in images]
        # One image per call: a batch would zero-pad mixed sizes to the largest and change
        # the detections with the company an image keeps; per image, eager and ONNX agree.
        results = []
        for out in (self.runner([tensor])[0] for tensor in tensors):
            ids = (out["labels"] - 1).cpu().numpy()
            results.append(
                Detections(
                    boxes=out["boxes"].float().cpu().numpy(),
                    labels=[self.class_names[i] for i in ids],
                    class_ids=ids,
                    scores=out["scores"].float().cpu().numpy(),
                    class_names=self.class_names,
                )
            )
        return results

    def predict_batch(self, images: Sequence[Any]) -> list[Detections]:
        return [d.above(self.score_threshold) for d in self.detect_all(images)]
