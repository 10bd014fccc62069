"""The toy network as one ONNX graph with a free batch size."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tests.toy_presence.net import VIEW


def export_toy(net: nn.Module, path: Path) -> Path:
    torch.onnx.export(
        net.eval(),
        (torch.rand(1, 1, *VIEW),),
        str(path),
        input_names=["image"],
        dynamic_axes={"image": {0: "batch"}},
        dynamo=False,
    )
    return path
