"""The YOLO kind: bundle <-> YoloNet <-> box predictor <-> ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from defects.kinds.base import bundle_meta, input_channels
from defects.kinds.detection import BoxKind, DetectionPredictor
from defects.kinds.yolo.export import export_yolo
from defects.kinds.yolo.predictor import OnnxNetwork, YoloRunner


class YoloKind(BoxKind):
    def bundle_from_module(self, module: Any, cfg: DictConfig) -> dict[str, Any]:
        hp = module.hparams
        return {
            "model": {
                "kwargs": {
                    "model_yaml": dict(hp.model_yaml),
                    "num_classes": len(hp.class_names),
                    "channels": int(hp.channels),
                },
                "postprocess": module.postprocess(),
            },
            # The EMA weights: what validation scored and the best checkpoint holds.
            "state_dict": module.ema.module.state_dict(),
            "class_names": list(hp.class_names),
            "thresholds": {"score": float(hp.score_threshold)},
            "input": {"channels": int(hp.channels), "size": int(hp.imgsz)},
        }

    def build_network(self, kwargs: dict[str, Any]) -> Any:
        from defects.kinds.yolo.net import YoloNet

        return YoloNet(**kwargs)

    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> DetectionPredictor:
        # Channels-last: oneDNN's convolutions skip a layout change per layer (yolo12n at
        # 640x480 on 2 CPU cores: 196 -> 176 ms); the numbers are the same convolutions.
        net = self.network(bundle).fuse().to(device, memory_format=torch.channels_last)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return net(x.to(device, memory_format=torch.channels_last))

        runner = YoloRunner(run, bundle["model"]["postprocess"])
        return DetectionPredictor(bundle_meta(bundle), runner, "eager", device)

    def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
        post = bundle["model"]["postprocess"]
        size, rect = int(post["imgsz"]), bool(post.get("rect", False))
        export_yolo(self.network(bundle), folder / "yolo.onnx", input_channels(bundle), size, rect)
        return {"graphs": ["yolo.onnx"]}

    def onnx_predictor(
        self, folder: Path, manifest: dict[str, Any], threads: int = 0
    ) -> DetectionPredictor:
        meta = manifest["bundle"]
        runner = YoloRunner(
            OnnxNetwork(folder / "yolo.onnx", threads), meta["model"]["postprocess"]
        )
        return DetectionPredictor(meta, runner, "onnx")


KIND = YoloKind()
