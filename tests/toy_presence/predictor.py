"""The toy kind's result and predictor: which classes an image shows, eager or ONNX."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defects.data.transforms import to_tensor
from defects.kinds.base import Predictor
from defects.results import Detections
from tests.toy_presence.net import to_view


@dataclass
class Presence:
    """Which classes the image shows, with their probabilities."""

    probs: np.ndarray
    class_names: list[str]
    threshold: float

    @property
    def present(self) -> list[str]:
        return [n for n, p in zip(self.class_names, self.probs, strict=True) if p >= self.threshold]

    def record(self) -> dict[str, Any]:
        return {"present": self.present, "probs": [float(p) for p in self.probs]}

    def table(self) -> tuple[list[str], list[tuple[int, list[Any]]]]:
        return ["class", "probability"], [
            (k, [n, f"{p:.3f}"])
            for k, (n, p) in enumerate(zip(self.class_names, self.probs, strict=True))
        ]

    def headline(self) -> str:
        return f"Present: {', '.join(self.present) or 'none'}."

    def overlay(self, image: np.ndarray) -> np.ndarray:
        return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy()

    def above(self, threshold: float) -> Presence:
        return Presence(self.probs, self.class_names, max(self.threshold, float(threshold)))

    def counts(self) -> dict[str, int]:
        return {name: 1 for name in self.present}

    def as_boxes(self) -> Detections:
        """No locations: an image-level classifier pre-labels nothing."""
        return Detections.empty(self.class_names)


class ToyPredictor(Predictor):
    main_threshold = "presence"

    def __init__(self, meta: dict[str, Any], runner: Any, backend: str = "eager"):
        super().__init__(meta, backend)
        self.runner = runner

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[Any]) -> list[Presence]:
        x = torch.stack([to_view(to_tensor(self.decode(i))) for i in images])
        probs = torch.sigmoid(self.runner(x)).numpy()
        return [Presence(p, self.class_names, float(self.thresholds["presence"])) for p in probs]


class OnnxRunner:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"image": x.numpy()})[0])
