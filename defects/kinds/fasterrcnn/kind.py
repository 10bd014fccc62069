"""The Faster R-CNN kind: bundle <-> Detector <-> box predictor <-> ONNX graph."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from defects.kinds.base import bundle_meta, input_channels
from defects.kinds.detection import BoxKind, DetectionPredictor

log = logging.getLogger("defects")


class FasterRCNNKind(BoxKind):
    aliases = ("detector",)  # bundles written before the kinds had folders

    def bundle_from_module(self, module: Any, cfg: DictConfig) -> dict[str, Any]:
        hp = module.hparams
        return {
            "model": {
                "kwargs": {"num_classes": len(hp.class_names) + 1, **hp.net},
            },
            "state_dict": module.detector.state_dict(),
            "class_names": list(hp.class_names),
            "thresholds": {"score": float(hp.score_threshold)},
            "input": {"channels": int(cfg.data.channels)},
        }

    def build_network(self, kwargs: dict[str, Any]) -> Any:
        from defects.kinds.fasterrcnn.net import Detector

        return Detector(**kwargs)

    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> DetectionPredictor:
        net = self.network(bundle).to(device)
        return DetectionPredictor(bundle_meta(bundle), net, "eager", device)

    def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
        from defects.kinds.fasterrcnn.export import export_detector

        channels = input_channels(bundle)
        export_detector(self.network(bundle), folder / "detector.onnx", channels)
        return {"graphs": ["detector.onnx"]}

    def onnx_predictor(
        self, folder: Path, manifest: dict[str, Any], threads: int = 0
    ) -> DetectionPredictor:
        from defects.kinds.fasterrcnn.predictor import OnnxDetector

        runner = OnnxDetector(folder / "detector.onnx", threads)
        return DetectionPredictor(manifest["bundle"], runner, "onnx")


KIND = FasterRCNNKind()
