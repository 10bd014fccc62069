"""The YOLO network as one ONNX graph: raw head output, decoded and NMS'd by the runner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from defects.kinds.yolo.net import YoloNet


def export_yolo(net: YoloNet, path: Path, channels: int, size: int, dynamic: bool = False) -> Path:
    """Trace the (fused) network at the letterbox size; `dynamic` keeps height and width free
    (the rectangular letterbox feeds any multiple of the stride up to `size`)."""
    import copy

    net = copy.deepcopy(net).eval()
    net.fuse()
    net.export_mode(True, dynamic=dynamic)
    dummy = torch.rand(1, channels, size, size)
    axes = {"images": {2: "height", 3: "width"}, "raw": {2: "anchors"}} if dynamic else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            input_names=["images"],
            output_names=["raw"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return path
