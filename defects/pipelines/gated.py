"""The gated steel flow: run the gate, then segment only what it lets through.

One flow for every backend: `GatedFlow` calls the design's parts (see
`defects.models.segmenter`), either the eager nn.Modules or ONNX Runtime sessions of the same
graphs, and applies the same selection in between. Thresholds turn probabilities into masks
the same way in evaluation, the CLI, the Flask page and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc

from defects.models.segmenter import Segmenter

Part = Callable[..., Any]


def pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Replicate-pad right/bottom so H and W divide by the encoder stride."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % stride, (-width) % stride
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


class GatedFlow:
    """`flow(images, gate_threshold)` -> (gate probs [N, K], mask probs [N, K, H, W]).

    Images are float [N, C, H, W] in [0, 1]. With `gate_threshold=None` every image is
    segmented (the ungated baseline); otherwise images whose highest gate probability is
    below it get all-zero masks and, in `separate` and `shared_backbone`, skip the decoder.
    """

    def __init__(self, design: str, parts: dict[str, Part], num_classes: int, stride: int = 32):
        self.design = design
        self.parts = parts
        self.num_classes = num_classes
        self.stride = stride

    @classmethod
    def eager(cls, segmenter: Segmenter) -> GatedFlow:
        parts = {name: part.eval() for name, part in segmenter.parts().items()}
        return cls(segmenter.design, parts, segmenter.num_classes, segmenter.stride)

    @classmethod
    def onnx(cls, folder: str | Path, threads: int = 0) -> GatedFlow:
        """Sessions for the graphs `export_onnx` wrote into `folder`."""
        import json

        import onnxruntime as ort

        folder = Path(folder)
        meta = json.loads((folder / "flow.json").read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # The gated flow alternates between sessions; a finished session's threads would
        # otherwise spin-wait for more work and take the cores from the next one.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        parts = {
            name: _OnnxPart(
                ort.InferenceSession(
                    str(folder / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
                )
            )
            for name in meta["parts"]
        }
        return cls(meta["design"], parts, meta["num_classes"], meta["stride"])

    @torch.inference_mode()
    def __call__(
        self, images: torch.Tensor, gate_threshold: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = images.shape[-2:]
        x = pad_to_stride(images, self.stride)
        n = x.shape[0]
        masks = x.new_zeros((n, self.num_classes, *x.shape[-2:]))
        if self.design == "separate":
            gate = torch.sigmoid(self.parts["gate"](x))
            keep = self._keep(gate, gate_threshold)
            if keep.any():
                masks[keep] = torch.sigmoid(self.parts["segment"](x[keep]))
        elif self.design == "two_heads":
            mask_logits, gate_logits = self.parts["segment"](x)
            gate = torch.sigmoid(gate_logits)
            keep = self._keep(gate, gate_threshold)
            masks[keep] = torch.sigmoid(mask_logits[keep])
        else:
            gate_logits, *features = self.parts["encode"](x)
            gate = torch.sigmoid(gate_logits)
            keep = self._keep(gate, gate_threshold)
            if keep.any():
                masks[keep] = torch.sigmoid(self.parts["decode"](*[f[keep] for f in features]))
        return gate, masks[..., :height, :width]

    @torch.inference_mode()
    def ungated(self, images: torch.Tensor) -> torch.Tensor:
        """Mask probs from the segmenter alone, no gate at all: the baseline a gate must beat
        (`separate` skips its classifier here; the other designs' gate heads cost ~nothing)."""
        if self.design != "separate":
            return self(images)[1]
        height, width = images.shape[-2:]
        masks = torch.sigmoid(self.parts["segment"](pad_to_stride(images, self.stride)))
        return masks[..., :height, :width]

    @staticmethod
    def _keep(gate: torch.Tensor, threshold: float | None) -> torch.Tensor:
        if threshold is None:
            return torch.ones(gate.shape[0], dtype=torch.bool, device=gate.device)
        return gate.max(dim=1).values >= threshold


class _OnnxPart:
    """An ONNX Runtime session behind the same call signature as the eager part."""

    def __init__(self, session: Any):
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]

    def __call__(self, *tensors: torch.Tensor) -> Any:
        feeds = {name: t.contiguous().numpy() for name, t in zip(self.inputs, tensors, strict=True)}
        outputs = [torch.from_numpy(o) for o in self.session.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def export_onnx(segmenter: Segmenter, folder: str | Path, in_channels: int = 1) -> Path:
    """Write each part of the design as an ONNX graph with dynamic batch, height and width."""
    import copy
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A private eval-mode copy: the exporter restores each part's training flag afterwards,
    # which would otherwise flip the caller's BatchNorm layers back to training mode.
    segmenter = copy.deepcopy(segmenter).eval()
    example = torch.rand(2, in_channels, 256, 320)
    parts = segmenter.parts()
    for name, part in parts.items():
        if name == "decode":
            with torch.inference_mode():
                _, *features = parts["encode"](example)
            args: tuple = tuple(features)
            input_names = [f"feature{i}" for i in range(len(features))]
        else:
            args = (example,)
            input_names = ["image"]
        dynamic = {n: {0: "batch", 2: f"h_{n}", 3: f"w_{n}"} for n in input_names}
        torch.onnx.export(
            part,
            args,
            str(folder / f"{name}.onnx"),
            input_names=input_names,
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    meta = {
        "design": segmenter.design,
        "parts": list(parts),
        "num_classes": segmenter.num_classes,
        "stride": segmenter.stride,
    }
    (folder / "flow.json").write_text(json.dumps(meta, indent=2))
    return folder


# --------------------------------------------------------------------------- thresholds


@dataclass
class Thresholds:
    """Gate threshold, then per class: pixel probability threshold and minimum mask area."""

    gate: float
    pixel: list[float]
    min_area: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "pixel": list(self.pixel), "min_area": list(self.min_area)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], num_classes: int) -> Thresholds:
        """A scalar applies to every class; a list must have one value per class."""

        def per_class(key: str, default: float, kind: type) -> list:
            value = values.get(key, default)
            if not isinstance(value, Sequence):
                return [kind(value)] * num_classes
            if len(value) != num_classes:
                raise ValueError(f"thresholds.{key}: {len(value)} values for {num_classes} classes")
            return [kind(v) for v in value]

        return cls(
            float(values.get("gate", 0.5)),
            per_class("pixel", 0.5, float),
            per_class("min_area", 0, int),
        )


def binarize(gate: torch.Tensor, masks: torch.Tensor, thresholds: Thresholds) -> torch.Tensor:
    """Bool masks [N, K, H, W]: pixel threshold per class, masks under min_area dropped, and
    every mask of an image the gate rejects dropped."""
    pixel = masks.new_tensor(thresholds.pixel).view(1, -1, 1, 1)
    binary = masks >= pixel
    area = binary.flatten(2).sum(-1)
    keep = area >= area.new_tensor(thresholds.min_area).view(1, -1)
    keep &= (gate.max(dim=1).values >= thresholds.gate)[:, None]
    return binary & keep[:, :, None, None]


@dataclass
class ThresholdSearch:
    """Collects per-pair statistics on validation data, then picks the thresholds with the
    best Kaggle Dice on a grid: only counts are kept (no probability maps), so it streams.

    Gate thresholds tried: 0 (all pass) and cuts midway between neighbouring observed gate
    scores (at most `gate_cuts`, spread over the score quantiles), each as far as possible from
    the strips on both sides of it. A gate trained from scratch is often badly calibrated
    (every strip between 0.13 and 0.32, say) yet well ordered; a fixed 0.1 grid would see
    only "all pass" there.
    """

    pixel_grid: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    area_grid: Sequence[int] = (0, 64, 256, 512, 1024, 2048, 4096)
    gate_cuts: int = 64
    counts: list[torch.Tensor] = field(default_factory=list)
    overlaps: list[torch.Tensor] = field(default_factory=list)
    truths: list[torch.Tensor] = field(default_factory=list)
    gates: list[torch.Tensor] = field(default_factory=list)

    def update(self, gate: torch.Tensor, masks: torch.Tensor, truth: torch.Tensor) -> None:
        truth = truth.bool()
        counts, overlaps = [], []
        for threshold in self.pixel_grid:
            binary = masks >= threshold
            counts.append(binary.flatten(2).sum(-1))
            overlaps.append((binary & truth).flatten(2).sum(-1))
        self.counts.append(torch.stack(counts, -1).double())  # [N, K, T]
        self.overlaps.append(torch.stack(overlaps, -1).double())
        self.truths.append(truth.flatten(2).sum(-1).double())  # [N, K]
        self.gates.append(gate.max(dim=1).values.double())  # [N]

    def pair_dice(self, gate_threshold: float) -> torch.Tensor:
        """Dice per (image, class, pixel threshold, min area) -> [N, K, T, A]."""
        counts, overlaps = torch.cat(self.counts), torch.cat(self.overlaps)
        truth = torch.cat(self.truths)[:, :, None, None]
        area = counts.new_tensor(list(self.area_grid)).view(1, 1, 1, -1)
        opened = (torch.cat(self.gates) >= gate_threshold)[:, None, None, None]
        kept = (counts[..., None] >= area) & opened
        pred = torch.where(kept, counts[..., None], torch.zeros_like(kept, dtype=counts.dtype))
        inter = torch.where(kept, overlaps[..., None], torch.zeros_like(pred))
        total = pred + truth
        return torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp(min=1))

    def gate_candidates(self) -> list[float]:
        """0 and the midpoints between neighbouring observed gate scores, ascending."""
        scores = torch.unique(torch.cat(self.gates))  # sorted
        cuts = (scores[1:] + scores[:-1]) / 2
        if len(cuts) > self.gate_cuts:
            cuts = cuts[torch.linspace(0, len(cuts) - 1, self.gate_cuts).round().long()]
        return sorted({0.0} | {round(float(c), 6) for c in cuts})

    def best(self) -> tuple[Thresholds, float]:
        """The grid point with the highest mean pair Dice (gate shared, the rest per class)."""
        if not self.counts:
            raise ValueError("threshold search saw no images")
        best: tuple[float, Thresholds] | None = None
        for gate_threshold in self.gate_candidates():
            per_class = self.pair_dice(gate_threshold).mean(0)  # [K, T, A]
            flat = per_class.flatten(1)
            scores, index = flat.max(1)
            n_areas = len(self.area_grid)
            candidate = Thresholds(
                float(gate_threshold),
                [float(self.pixel_grid[int(i) // n_areas]) for i in index],
                [int(self.area_grid[int(i) % n_areas]) for i in index],
            )
            score = float(scores.mean())
            if best is None or score >= best[0] - 1e-12:  # ties: the higher gate skips more
                best = (score, candidate)
        assert best is not None
        return best[1], best[0]


def gate_scores(gate: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float]:
    """Image-level gate accuracy, precision, recall and F1 (positive = has any defect), and
    the threshold-free AUROC (how well the gate orders the images; left out when the split
    has only one kind of image). A gate with a high AUROC but a poor F1 is miscalibrated,
    which the tuned gate threshold fixes; a low AUROC no threshold can fix."""
    pred = gate >= threshold
    truth = truth.astype(bool)
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auroc = {}
    if truth.any() and not truth.all():
        scores = torch.as_tensor(np.asarray(gate, dtype=np.float64))
        auroc["gate_auroc"] = float(binary_auroc(scores, torch.as_tensor(truth).long()))
    return {
        **auroc,
        "gate_accuracy": float((pred == truth).mean()) if len(truth) else 0.0,
        "gate_precision": precision,
        "gate_recall": recall,
        "gate_f1": f1,
    }
