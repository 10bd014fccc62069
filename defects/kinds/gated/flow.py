"""The gated steel flow: run the gate, then segment only what it lets through.

One flow for every backend: `GatedFlow` calls the design's parts (see
`defects.kinds.gated.net`), either the eager nn.Modules or ONNX Runtime sessions of the same
graphs, and applies the same selection in between. Thresholds turn probabilities into masks
the same way in evaluation, the CLI, the Flask page and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from defects.kinds.gated.net import Segmenter
from defects.kinds.onnx_session import cpu_session

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

    def __init__(self, design: str, parts: Mapping[str, Part], num_classes: int, stride: int = 32):
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
        """Sessions for the graphs `export.export_onnx` wrote into `folder`."""
        import json

        folder = Path(folder)
        meta = json.loads((folder / "flow.json").read_text())
        # The flow alternates between sessions: their idle workers sleep (see cpu_session).
        parts = {
            name: _OnnxPart(cpu_session(folder / f"{name}.onnx", threads)) for name in meta["parts"]
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
