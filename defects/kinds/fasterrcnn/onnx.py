"""ONNX export of the Faster R-CNN `Detector`, and an ONNX Runtime stand-in for it.

The graph takes one image [C,H,W] (floats in 0..1, any H and W) and returns boxes [N,4] in
that image's pixels, torchvision's 1-based labels [N] (int64) and scores [N]: torchvision's
resize, normalisation, NMS and box rescaling are all inside, traced the way torchvision's own
ONNX tests export Faster R-CNN (TorchScript exporter, opset >= 11). Two pieces of the traced
copy are swapped for equivalents: the resize, whose traced form loses a row at some sizes,
and the RoI-pooling merge, whose traced form is a third of the run time.

`OnnxDetector` wraps a session so that callers can swap it for an eval-mode `Detector`. It
runs one image at a time, as the graph does: that equals `Detector` called per image. An
eager batch of mixed sizes is zero-padded to its largest image, which shifts the features
near the padded edges, so its detections differ slightly from either.
"""

from __future__ import annotations

import copy
import os
import tempfile
import types
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.onnx import operators
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from defects.kinds.fasterrcnn.net import Detector
from defects.kinds.onnx_session import cpu_session

OPSET = 17
INPUT = "image"
OUTPUTS = ("boxes", "labels", "scores")


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 a * b + c rounded once, as ATen's FMA-compiled CPU kernels compute it.

    The product of two float32 values is exact in float64, so only the sum rounds twice
    (float64, then float32): rare, and one ulp at most.
    """
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


def _linear_taps(
    size_in: torch.Tensor, size_out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of bilinear (align_corners=False) resampling on one axis.

    ATen's CPU arithmetic: scale = in / out in float32, source = scale * (i + 0.5) - 0.5
    (fused), clamped at 0. ONNX Resize divides by out / in instead, which moves the weights
    by up to ~1e-4 on a few-hundred-pixel axis.
    """
    scale = torch.div(size_in.to(torch.float32), size_out.to(torch.float32))
    dst = torch.arange(size_out[0], dtype=torch.int64).to(torch.float32)
    src = torch.clamp(_fma(scale, dst + 0.5, torch.full_like(dst, -0.5)), min=0.0)
    last = size_in - 1
    i0 = torch.minimum(torch.floor(src).to(torch.int64), last)
    w1 = torch.clamp(src - i0.to(torch.float32), 0.0, 1.0)
    i1 = i0 + (i0 < last).to(torch.int64)
    return i0, i1, 1.0 - w1, w1


def _exact_resize(
    self: GeneralizedRCNNTransform,
    image: torch.Tensor,
    target: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Eval-time resize that traces to the same pixels as eager torchvision.

    Size: eager torchvision takes floor(side * min(min_size / short, max_size / long)) in
    Python doubles; its traced path does it in float32 through a reciprocal, which can land a
    hair under an integer and lose a row (200x120 at 128/160 gives 159 rows, not 160), shifting
    every box. Here it runs in float64 with true divisions. Values: bilinear by gathers with
    ATen's own index/weight arithmetic (`_linear_taps`), not ONNX Resize.
    """
    if self.training or target is not None or self.fixed_size is not None:
        return GeneralizedRCNNTransform.resize(self, image, target)
    # One-element tensors, not 0-d: the exporter casts 0-d ("scalar") doubles to float32.
    size_in = operators.shape_as_tensor(image)[-2:]
    shape = size_in.to(torch.float64)
    height, width = shape[0:1], shape[1:2]
    short, long = torch.minimum(height, width), torch.maximum(height, width)
    lo = torch.tensor([float(self.min_size[-1])], dtype=torch.float64)
    hi = torch.tensor([float(self.max_size)], dtype=torch.float64)
    scale = torch.minimum(torch.div(lo, short), torch.div(hi, long))
    size = torch.floor(shape * scale).to(torch.int64)
    r0, r1, rw0, rw1 = _linear_taps(size_in[0:1], size[0:1])
    c0, c1, cw0, cw1 = _linear_taps(size_in[1:2], size[1:2])
    # Across first, on every source row (a row's horizontal blend is the same whichever
    # output rows use it): two column gathers instead of one per output row pair. They run
    # on the transposed [W, C*H] image, since ORT gathers a last axis one float at a time
    # but a first axis whole rows at once, and a 2-D transpose is cheap: the resize of a
    # 3x256x384 image fell from ~11 ms to ~2 ms (a [W, H, C] permute is slow at C = 3).
    # Same arithmetic per pixel as before, so the same bits.
    columns = image.flatten(0, 1).t()
    w0, w1 = cw0[:, None], cw1[:, None]
    across = _fma(columns.index_select(0, c1), w1, columns.index_select(0, c0) * w0)
    across = across.t().reshape(image.shape[0], image.shape[1], -1)
    top, bottom = across.index_select(1, r0), across.index_select(1, r1)
    return _fma(bottom, rw1[:, None], top * rw0[:, None]), target


class _PoolThenHead(nn.Module):
    """torchvision's multi-level RoIAlign, each level's boxes run through the box head.

    Traced torchvision scatters each level's [n, 256, 7, 7] result into a zero tensor
    through a fully expanded int64 index: a third of the graph's CPU time. Every box sits
    on exactly one level, so undoing the grouping is a permutation; and the box head treats
    each box on its own, so the permutation can wait until after it, where it moves
    [n, 256] features instead of 50x as much pooled data (the concatenation and gather of
    the pooled tensor were ~3% of the graph's time). The roi_heads' own box_head becomes
    an identity.
    """

    def __init__(self, pool: MultiScaleRoIAlign, head: nn.Module):
        super().__init__()
        self.pool = pool
        self.head = head

    def forward(
        self,
        x: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        pool = self.pool
        features = _filter_input(x, pool.featmap_names)
        if pool.scales is None or pool.map_levels is None:
            pool.scales, pool.map_levels = _setup_scales(
                features, image_shapes, pool.canonical_scale, pool.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        size, ratio = pool.output_size, pool.sampling_ratio
        if len(features) == 1:
            return self.head(roi_align(features[0], rois, size, pool.scales[0], ratio))
        levels = pool.map_levels(boxes)
        order, heads = [], []
        for level, (feature, scale) in enumerate(zip(features, pool.scales, strict=True)):
            index = torch.where(levels == level)[0]
            order.append(index)
            heads.append(self.head(roi_align(feature, rois[index], size, scale, ratio)))
        return torch.cat(heads)[torch.argsort(torch.cat(order))]


class _SingleImage(nn.Module):
    """One image in, the three detection tensors out: the shape ONNX can carry."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.detector([image])[0]
        return out["boxes"], out["labels"], out["scores"]


def export_detector(
    detector: Detector,
    path: str | Path,
    channels: int,
    example_hw: tuple[int, int] = (256, 384),
    opset: int = OPSET,
) -> Path:
    """Write `detector` as an ONNX graph with dynamic height and width; returns `path`.

    A private eval-mode copy is traced (the exporter would otherwise flip the caller's
    training flags back), and the file appears only once complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    detector = copy.deepcopy(detector).cpu().eval()
    transform = detector.model.transform
    transform.resize = types.MethodType(_exact_resize, transform)
    heads = detector.model.roi_heads
    if isinstance(heads.box_roi_pool, MultiScaleRoIAlign):
        heads.box_roi_pool = _PoolThenHead(heads.box_roi_pool, heads.box_head)
        heads.box_head = nn.Identity()
    wrapper = _SingleImage(detector).eval()
    # Not all-equal pixels: a constant image can send the trace down a no-detection path.
    example = torch.rand(channels, *example_hw, generator=torch.Generator().manual_seed(0))
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # Tracing torchvision's detector warns at every shape turned into a tensor and
            # every advanced index; the parity tests are what guard the graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            for category in (UserWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category, module=r"torch(vision)?\.")
            torch.onnx.export(
                wrapper,
                (example,),
                tmp,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_axes={
                    INPUT: {1: "height", 2: "width"},
                    **{name: {0: "detections"} for name in OUTPUTS},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class OnnxDetector:
    """An exported detector behind `Detector`'s eval interface: images in, detections out."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.session = cpu_session(path, threads)
        self.channels: int = self.session.get_inputs()[0].shape[0]

    @torch.inference_mode()
    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image, in its own pixels, as `Detector` returns them in eval mode."""
        results = []
        for image in images:
            if image.dim() != 3 or image.shape[0] != self.channels:
                raise ValueError(
                    f"expected a [{self.channels},H,W] image, got {tuple(image.shape)}"
                )
            if not image.is_floating_point():
                raise TypeError(f"expected a float image in 0..1, got {image.dtype}")
            array = image.detach().to("cpu", torch.float32).contiguous().numpy()
            boxes, labels, scores = self.session.run(list(OUTPUTS), {INPUT: array})
            results.append(
                {
                    "boxes": torch.from_numpy(boxes),
                    "labels": torch.from_numpy(labels).to(torch.int64),
                    "scores": torch.from_numpy(scores),
                }
            )
        return results
