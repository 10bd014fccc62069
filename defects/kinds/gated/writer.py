"""What `defects predict` writes for a segmentation bundle: masks, overlays, a summary and a
Severstal submission."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from defects.formats.io import atomic_write_text
from defects.kinds.base import PredictionWriter
from defects.kinds.gated.predictor import SegmentationPredictor
from defects.results import SegmentationResult


class MaskWriter(PredictionWriter[SegmentationResult]):
    """masks/<stem>.png (uint8 index mask), overlays/<stem>.png, summary.json
    ({image: {gate, areas}}) and submission.csv (Severstal ImageId,ClassId,EncodedPixels;
    a defect-free image gets one empty row), which `close` returns."""

    report_name = "submission.csv"

    def __init__(self, predictor: SegmentationPredictor, out_dir: Path, overlays: bool = True):
        super().__init__(predictor, out_dir, overlays)
        self.submission: dict[str, dict[int, str]] = {}
        self.stems: dict[str, str] = {}

    def add(self, path: Path, image: np.ndarray, result: SegmentationResult) -> None:
        from defects.formats.mask_folder import write_index_mask
        from defects.formats.severstal import rle_encode

        if self.stems.setdefault(path.stem, path.name) != path.name:  # would overwrite
            raise ValueError(
                f"{self.stems[path.stem]} and {path.name} would both write {path.stem}.png"
            )
        super().add(path, image, result)
        write_index_mask(self.out_dir / "masks" / f"{path.stem}.png", result.index_mask())
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
