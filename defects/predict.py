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
from defects.models.segmenter import Segmenter
from defects.pipelines.gated import GatedFlow, Thresholds, binarize

MODEL_BUILDERS = {"detector": Detector, "segmenter": Segmenter}


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


def image_tensor(image: str | Path | np.ndarray | Image.Image, channels: int) -> torch.Tensor:
    """A path, PIL image or array as a float [C, H, W] tensor in [0, 1] with `channels`."""
    if isinstance(image, (str, Path)):
        array = read_image(image, channels)
    else:
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.dtype != np.uint8:
                raise ValueError(f"image array must be uint8 (0-255), got {array.dtype}")
            image = Image.fromarray(array)
        # PIL's conversion for every input kind, so a path, a PIL image and an array of the
        # same picture give the model the same pixels.
        array = np.array(image.convert("L" if channels == 1 else "RGB"))  # writable copy
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


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

    @torch.inference_mode()
    def predict_batch(self, images: list[Any]) -> list[Detections]:
        tensors = [image_tensor(image, self.channels).to(self.device) for image in images]
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


@dataclass
class SegmentationResult:
    """Masks [K, H, W] bool at the input's size, the gate's probability, and class names."""

    masks: np.ndarray
    gate: float
    class_names: list[str]

    @property
    def present(self) -> list[str]:
        return [name for name, mask in zip(self.class_names, self.masks, strict=True) if mask.any()]

    def areas(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in zip(self.class_names, self.masks, strict=True)}


class SegmentationPredictor:
    """`predict(image)` -> SegmentationResult through the gated flow and tuned thresholds.

    `flow` defaults to the eager networks; pass `GatedFlow.onnx(folder)` for ONNX Runtime.
    """

    def __init__(
        self,
        model: Segmenter,
        class_names: list[str],
        thresholds: dict[str, Any],
        channels: int = 1,
        resize: list[int] | None = None,
        device: str = "cpu",
        flow: GatedFlow | None = None,
    ):
        self.model = model.to(device).eval()
        self.class_names = list(class_names)
        self.thresholds = Thresholds.from_dict(thresholds, len(self.class_names))
        self.channels = channels
        self.resize = resize
        self.device = device
        self.flow = flow or GatedFlow.eager(self.model)

    @torch.inference_mode()
    def predict_batch(self, images: list[Any]) -> list[SegmentationResult]:
        """Images of one size go through as one batch; others one by one."""
        tensors = [image_tensor(image, self.channels) for image in images]
        results: list[SegmentationResult | None] = [None] * len(tensors)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault(tuple(tensor.shape), []).append(index)
        for shape, indices in groups.items():
            batch = torch.stack([tensors[i] for i in indices]).to(self.device)
            if self.resize:
                batch = torch.nn.functional.interpolate(
                    batch, size=tuple(self.resize), mode="bilinear", align_corners=False
                )
            gate, probs = self.flow(batch, self.thresholds.gate)
            masks = binarize(gate, probs, self.thresholds)
            if self.resize:
                masks = torch.nn.functional.interpolate(
                    masks.float(), size=shape[-2:], mode="nearest"
                ).bool()
            for i, index in enumerate(indices):
                results[index] = SegmentationResult(
                    masks[i].cpu().numpy(), float(gate[i].max()), self.class_names
                )
        return [r for r in results if r is not None]

    def predict(self, image: Any) -> SegmentationResult:
        return self.predict_batch([image])[0]


def load(path: str | Path, device: str = "cpu") -> DetectionPredictor | SegmentationPredictor:
    """Rebuild the predictor stored in a bundle written by `defects.train`."""
    bundle = load_bundle(path)
    if bundle["model"]["kind"] == "segmenter":
        return SegmentationPredictor(
            model_from_bundle(bundle),
            bundle["class_names"],
            bundle["thresholds"],
            int(bundle["input"].get("channels", 1)),
            bundle["input"].get("resize"),
            device,
        )
    return DetectionPredictor(
        model_from_bundle(bundle),
        bundle["class_names"],
        float(bundle["thresholds"].get("score", 0.5)),
        int(bundle["input"].get("channels", 1)),
        device,
    )
