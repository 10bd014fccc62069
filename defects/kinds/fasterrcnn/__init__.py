"""The Faster R-CNN kind (torchvision): weld radiographs, NEU-DET, any YOLO-layout boxes.

net.py (Detector), module.py (DetectionModule), predictor.py, evaluate.py, onnx.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from defects.kinds import register
from defects.kinds.base import ModelKind, PredictionWriter, bundle_meta, input_channels
from defects.kinds.fasterrcnn import evaluate as evaluation
from defects.kinds.fasterrcnn.predictor import DetectionPredictor

log = logging.getLogger("defects")


class DetectionWriter(PredictionWriter):
    report_name = "detections.json"


class FasterRCNNKind(ModelKind):
    name = "fasterrcnn"
    evaluation = evaluation
    predictor_class = DetectionPredictor
    writer_class = DetectionWriter

    def bundle_from_module(self, module: Any, cfg: DictConfig) -> dict[str, Any]:
        hp = module.hparams
        return {
            "model": {
                "kind": self.name,
                "kwargs": {"num_classes": len(hp.class_names) + 1, **hp.net},
            },
            "state_dict": module.detector.state_dict(),
            "class_names": list(hp.class_names),
            "thresholds": {"score": float(hp.score_threshold)},
            "input": {"channels": int(cfg.data.channels)},
        }

    def tune(self, bundle: dict[str, Any], datamodule: Any) -> dict[str, Any]:
        thresholds, f1 = evaluation.tune(self.predictor(bundle), datamodule)
        log.info("tuned score threshold %.2f (val F1 %.4f)", thresholds["score"], f1)
        return thresholds

    def build_network(self, kwargs: dict[str, Any]) -> Any:
        from defects.kinds.fasterrcnn.net import Detector

        return Detector(**kwargs)

    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> DetectionPredictor:
        net = self.network(bundle).to(device)
        return DetectionPredictor(bundle_meta(bundle), net, "eager", device)

    def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
        from defects.kinds.fasterrcnn.onnx import export_detector

        channels = input_channels(bundle)
        export_detector(self.network(bundle), folder / "detector.onnx", channels)
        return {"graphs": ["detector.onnx"]}

    def onnx_predictor(
        self, folder: Path, manifest: dict[str, Any], threads: int = 0
    ) -> DetectionPredictor:
        from defects.kinds.fasterrcnn.onnx import OnnxDetector

        runner = OnnxDetector(folder / "detector.onnx", threads)
        return DetectionPredictor(manifest["bundle"], runner, "onnx")


KIND = register(FasterRCNNKind())
