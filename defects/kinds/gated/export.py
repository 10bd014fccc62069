"""The gated design as ONNX graphs, one per part (gate, encode, decode), that `GatedFlow.onnx`
runs with the same selection in between as the eager flow."""

from __future__ import annotations

from pathlib import Path

import torch

from defects.kinds.gated.net import Segmenter
from defects.progress import progress


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
    for name, part in progress(parts.items(), "export", len(parts), unit="graph"):
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
