"""Standalone predictors rebuilt from a bundle: no Lightning, no Hydra, one inference path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from defects.bundle import load_bundle
from defects.data.images import read_image
from defects.models.detector import Detector

MODEL_BUILDERS = {"detector": Detector}


@dataclass
class Detections:
    """Boxes in pixels (x1, y1, x2, y2), class names, class ids (0-based) and scores."""

    boxes: np.ndarray
    labels: list[str]
    class_ids: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a registered model kind from the plain kwargs stored in a bundle."""
    kind = spec.get("kind")
    if kind not in MODEL_BUILDERS:
        raise ValueError(f"unknown model kind '{kind}' in bundle; known: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[kind](**spec["kwargs"])


def model_from_bundle(bundle: dict[str, Any]) -> torch.nn.Module:
    """The bundle's network, rebuilt from its plain kwargs and loaded with its weights."""
    model = build_model(bundle["model"])
    model.load_state_dict(bundle["state_dict"])
    return model


class DetectionPredictor:
    """`predict(image)` -> Detections above the bundle's score threshold."""

    def __init__(
        self,
        model: Detector,
        class_names: list[str],
        score_threshold: float,
        channels: int = 1,
        device: str = "cpu",
    ):
        self.model = model.to(device).eval()
        self.class_names = list(class_names)
        self.score_threshold = score_threshold
        self.channels = channels
        self.device = device

    def _to_tensor(self, image: str | Path | np.ndarray | Image.Image) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            array = read_image(image, self.channels)
        elif isinstance(image, Image.Image):
            array = np.asarray(image.convert("L" if self.channels == 1 else "RGB"))
        else:
            array = np.asarray(image)
            if self.channels == 1 and array.ndim == 3:
                array = array.mean(axis=2).astype(np.uint8)
            elif self.channels == 3 and array.ndim == 2:
                array = np.repeat(array[:, :, None], 3, axis=2)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)

    @torch.inference_mode()
    def predict_batch(self, images: list[Any]) -> list[Detections]:
        tensors = [self._to_tensor(image).to(self.device) for image in images]
        results = []
        for out in self.model(tensors):
            keep = out["scores"] >= self.score_threshold
            ids = (out["labels"][keep] - 1).cpu().numpy()
            results.append(
                Detections(
                    boxes=out["boxes"][keep].cpu().numpy(),
                    labels=[self.class_names[i] for i in ids],
                    class_ids=ids,
                    scores=out["scores"][keep].cpu().numpy(),
                )
            )
        return results

    def predict(self, image: Any) -> Detections:
        return self.predict_batch([image])[0]


def load(path: str | Path, device: str = "cpu") -> DetectionPredictor:
    """Rebuild the predictor stored in a bundle written by `defects.train`."""
    bundle = load_bundle(path)
    return DetectionPredictor(
        model_from_bundle(bundle),
        bundle["class_names"],
        float(bundle["thresholds"].get("score", 0.5)),
        int(bundle["input"].get("channels", 1)),
        device,
    )
