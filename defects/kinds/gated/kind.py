"""The gated segmentation kind: bundle <-> Segmenter <-> gated predictor <-> ONNX graphs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from defects.config import ConfigError
from defects.kinds.base import EvalData, ModelKind, bundle_meta, input_channels
from defects.kinds.gated import evaluate as evaluation
from defects.kinds.gated.flow import GatedFlow
from defects.kinds.gated.predictor import SegmentationPredictor
from defects.kinds.gated.thresholds import ThresholdSearch
from defects.kinds.gated.writer import MaskWriter

log = logging.getLogger("defects")


class GatedSegmentationKind(ModelKind):
    aliases = ("gated_segmentation", "segmenter")  # names older bundles carry
    evaluation = evaluation
    writer_class = MaskWriter

    def bundle_from_module(self, module: Any, cfg: DictConfig) -> dict[str, Any]:
        hp = module.hparams
        resize = cfg.data.get("resize")
        return {
            "model": {
                "kwargs": {"num_classes": len(hp.class_names), "design": hp.design, **hp.net},
            },
            "state_dict": module.net.state_dict(),
            "class_names": list(hp.class_names),
            "thresholds": dict(module.thresholds.as_dict()),
            "input": {
                "channels": int(cfg.data.channels),
                "resize": [int(v) for v in resize] if resize else None,
            },
            "output": {"exclusive": bool(hp.get("exclusive", False))},
        }

    def tune_with_curves(
        self, bundle: dict[str, Any], datamodule: EvalData, search: Any = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """`search`: the run's `tune` node built (a `ThresholdSearch`, its objective), or
        None for the Kaggle Dice search."""
        if search is not None and not isinstance(search, ThresholdSearch):
            raise ConfigError(
                f"tune._target_: the gated kind tunes with a ThresholdSearch, "
                f"not {type(search).__qualname__}"
            )
        thresholds, scores, curves = evaluation.tune(self.predictor(bundle), datamodule, search)
        at = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        log.info("tuned thresholds %s (validation: %s)", thresholds, at)
        return thresholds, curves

    def build_network(self, kwargs: dict[str, Any]) -> Any:
        from defects.kinds.gated.net import Segmenter

        return Segmenter(**kwargs)

    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> SegmentationPredictor:
        net = self.network(bundle).to(device)
        return SegmentationPredictor(bundle_meta(bundle), GatedFlow.eager(net), "eager", device)

    def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
        from defects.kinds.gated.export import export_onnx

        channels = input_channels(bundle)
        export_onnx(self.network(bundle), folder, channels)
        return {"graphs": sorted(p.name for p in folder.glob("*.onnx"))}

    def onnx_predictor(
        self, folder: Path, manifest: dict[str, Any], threads: int = 0
    ) -> SegmentationPredictor:
        return SegmentationPredictor(manifest["bundle"], GatedFlow.onnx(folder, threads), "onnx")


KIND = GatedSegmentationKind()
