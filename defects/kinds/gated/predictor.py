"""Gated segmentation predictor: decode -> (resize) -> gated flow -> masks at original size.

One resize in, one resize out: with `input.resize` in the bundle the image is resized
bilinearly for the network and its probabilities are resized back bilinearly, and the
thresholds (pixel, min_area in original pixels) apply at the original resolution. Threshold
tuning reads the same probabilities (`probabilities`), so what is tuned is what is served.

With ``output.exclusive`` in the bundle (``model.exclusive``) each pixel keeps only its most
probable class's probability, the others 0: for classes that cannot share a pixel (pipe
defects) two look-alike classes firing on one blob become one class, not two overlapping
masks that an index mask would settle by class id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from defects.data.transforms import to_tensor
from defects.kinds.base import Predictor
from defects.kinds.gated.flow import GatedFlow
from defects.kinds.gated.thresholds import Thresholds, binarize
from defects.results import SegmentationResult


def exclusive_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """[N, K, H, W] with every class but each pixel's most probable one set to 0 (ties:
    the lower class id)."""
    if probs.shape[1] < 2:
        return probs
    top = probs.argmax(dim=1, keepdim=True)
    return torch.zeros_like(probs).scatter_(1, top, probs.gather(1, top))


class SegmentationPredictor(Predictor[SegmentationResult]):
    """`predict(image)` -> SegmentationResult through the gated flow and tuned thresholds."""

    main_threshold = "gate"

    def __init__(
        self, meta: dict[str, Any], flow: GatedFlow, backend: str = "eager", device: str = "cpu"
    ):
        super().__init__(meta, backend)
        self.flow = flow
        self.device = device
        resize = meta["input"].get("resize")
        self.resize = tuple(int(v) for v in resize) if resize else None
        self.exclusive = bool((meta.get("output") or {}).get("exclusive", False))

    def required_thresholds(self) -> tuple[str, ...]:
        return ("gate", "pixel", "min_area")

    @property
    def tuned(self) -> Thresholds:
        return Thresholds.from_dict(self.thresholds, len(self.class_names))

    @torch.inference_mode()
    def probabilities(
        self, images: Sequence[np.ndarray], gated: bool = True
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """(indices, gate [n, K], probs [n, K, H, W]) per group of same-size images, at their
        original size; `gated=False` segments every image (what threshold tuning needs)."""
        tensors = [to_tensor(image) for image in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault(tuple(tensor.shape), []).append(index)
        for shape, indices in groups.items():
            batch = torch.stack([tensors[i] for i in indices]).to(self.device)
            if self.resize:
                batch = F.interpolate(batch, size=self.resize, mode="bilinear", align_corners=False)
            gate, probs = self.flow(batch, self.tuned.gate if gated else None)
            if self.resize:
                probs = F.interpolate(probs, size=shape[-2:], mode="bilinear", align_corners=False)
            if self.exclusive:
                probs = exclusive_probabilities(probs)
            yield indices, gate.cpu(), probs.cpu()

    def ungated(self, images: Sequence[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(gate [K], probabilities [K, H, W]) of each image, every image segmented whatever
        its gate: what threshold tuning and the pipe's refinement read."""
        found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for indices, gate, probs in self.probabilities(images, gated=False):
            found.update(zip(indices, zip(gate, probs, strict=True), strict=True))
        return [found[i] for i in range(len(images))]

    def predict_batch(self, images: Sequence[Any]) -> list[SegmentationResult]:
        """Images of one size go through as one batch; others one group at a time."""
        arrays = [self.decode(image) for image in images]
        thresholds = self.tuned
        results: list[SegmentationResult | None] = [None] * len(arrays)
        for indices, gate, probs in self.probabilities(arrays):
            masks = binarize(gate, probs, thresholds).numpy()
            for i, index in enumerate(indices):
                results[index] = SegmentationResult(
                    masks[i], float(gate[i].max()), self.class_names, thresholds.gate
                )
        return [r for r in results if r is not None]
