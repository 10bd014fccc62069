"""The gated segmentation kind: an EfficientNet gate + Unet/LinkNet (smp), steel and pipe.

net.py (Segmenter and its parts), module.py (SegmentationModule), flow.py (the gated flow,
eager or ONNX Runtime), thresholds.py, predictor.py, evaluate.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from defects.formats.io import atomic_write_text
from defects.kinds import register
from defects.kinds.base import ModelKind, PredictionWriter, bundle_meta, input_channels
from defects.kinds.gated import evaluate as evaluation
from defects.kinds.gated.flow import GatedFlow
from defects.kinds.gated.predictor import SegmentationPredictor

log = logging.getLogger("defects")


def index_mask(masks: np.ndarray) -> np.ndarray:
    """[K, H, W] bool -> (H, W) uint8, 0 = background; classes are painted in id order, so
    where masks overlap the higher class id wins."""
    if len(masks) > 255:
        raise ValueError(f"{len(masks)} classes do not fit a uint8 index mask")
    index = np.zeros(masks.shape[1:], dtype=np.uint8)
    for class_id, mask in enumerate(masks, start=1):
        index[mask] = class_id
    return index


class MaskWriter(PredictionWriter):
    """masks/<stem>.png (uint8 index mask), overlays/<stem>.png, summary.json
    ({image: {gate, areas}}) and submission.csv (Severstal ImageId,ClassId,EncodedPixels;
    a defect-free image gets one empty row), which `close` returns."""

    report_name = "submission.csv"

    def __init__(self, predictor: Any, out_dir: Path, overlays: bool = True):
        super().__init__(predictor, out_dir, overlays)
        self.submission: dict[str, dict[int, str]] = {}
        self.stems: dict[str, str] = {}

    def add(self, path: Path, image: np.ndarray, result: Any) -> None:
        from defects.formats.mask_folder import write_index_mask
        from defects.formats.severstal import rle_encode

        if self.stems.setdefault(path.stem, path.name) != path.name:  # would overwrite
            raise ValueError(
                f"{self.stems[path.stem]} and {path.name} would both write {path.stem}.png"
            )
        super().add(path, image, result)
        write_index_mask(self.out_dir / "masks" / f"{path.stem}.png", index_mask(result.masks))
        self.submission[path.name] = {  # RLE text, not masks: memory stays flat
            k + 1: rle_encode(mask) for k, mask in enumerate(result.masks) if mask.any()
        }
        self.records[path.name] = {"gate": round(result.gate, 4), "areas": result.areas()}

    def close(self) -> Path:
        from defects.formats.severstal import write_severstal_csv

        atomic_write_text(self.out_dir / "summary.json", json.dumps(self.records, indent=1))
        report = self.out_dir / self.report_name
        write_severstal_csv(report, self.submission)
        return report


class GatedSegmentationKind(ModelKind):
    name = "gated_segmentation"
    evaluation = evaluation
    predictor_class = SegmentationPredictor
    writer_class = MaskWriter

    def bundle_from_module(self, module: Any, cfg: DictConfig) -> dict[str, Any]:
        hp = module.hparams
        resize = cfg.data.get("resize")
        return {
            "model": {
                "kind": self.name,
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

    def tune(self, bundle: dict[str, Any], datamodule: Any) -> dict[str, Any]:
        thresholds, dice = evaluation.tune(self.predictor(bundle), datamodule)
        log.info("tuned thresholds %s (val dice %.4f)", thresholds, dice)
        return thresholds

    def build_network(self, kwargs: dict[str, Any]) -> Any:
        from defects.kinds.gated.net import Segmenter

        return Segmenter(**kwargs)

    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> SegmentationPredictor:
        net = self.network(bundle).to(device)
        return SegmentationPredictor(bundle_meta(bundle), GatedFlow.eager(net), "eager", device)

    def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
        from defects.kinds.gated.flow import export_onnx

        channels = input_channels(bundle)
        export_onnx(self.network(bundle), folder, channels)
        return {"graphs": sorted(p.name for p in folder.glob("*.onnx"))}

    def onnx_predictor(
        self, folder: Path, manifest: dict[str, Any], threads: int = 0
    ) -> SegmentationPredictor:
        return SegmentationPredictor(manifest["bundle"], GatedFlow.onnx(folder, threads), "onnx")


KIND = register(GatedSegmentationKind())
