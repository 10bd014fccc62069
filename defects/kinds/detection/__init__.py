"""What every box kind shares (Faster R-CNN, YOLO): the predictor over a kind's runner, its
evaluation (mAP on the whole ranking, P/R/F1 at the tuned score), threshold tuning and the
prediction writer.

A box kind supplies only its network, a runner ([C, H, W] images in 0..1 -> {boxes in
original pixels, 1-based labels, scores}, best first), the bundle and the export.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any

from defects.kinds.base import EvalData, ModelKind, PredictionWriter, refuse_search
from defects.kinds.detection import evaluate as evaluation
from defects.kinds.detection.predictor import DetectionPredictor
from defects.results import Detections

log = logging.getLogger("defects")


class DetectionWriter(PredictionWriter[Detections]):
    report_name = "detections.json"


class BoxKind(ModelKind):
    """A kind whose predictor returns boxes; subclasses give the network and the runner."""

    evaluation = evaluation
    writer_class = DetectionWriter

    @abstractmethod
    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> DetectionPredictor:
        """The eager predictor of a bundle (`tune` needs its `detect_all`)."""

    def tune_with_curves(
        self, bundle: dict[str, Any], datamodule: EvalData, search: Any = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The score threshold with the best validation F1 (no `tune` node: `search` None)."""
        refuse_search(self, search)
        thresholds, curves = evaluation.tune(self.predictor(bundle), datamodule)
        f1 = curves[0]["series"]["F1"][curves[0]["x"].index(thresholds["score"])]
        log.info("tuned score threshold %.2f (val F1 %.4f)", thresholds["score"], f1)
        return thresholds, curves


__all__ = ["BoxKind", "DetectionPredictor", "DetectionWriter"]
