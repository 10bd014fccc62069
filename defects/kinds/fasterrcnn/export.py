"""ONNX export of the Faster R-CNN `Detector`, and an ONNX Runtime stand-in for it.

The graph takes one image [C,H,W] (floats in 0..1, any H and W) and returns boxes [N,4] in
that image's pixels, torchvision's 1-based labels [N] (int64) and scores [N]: torchvision's
resize, normalisation, NMS and box rescaling are all inside, traced the way torchvision's own
ONNX tests export Faster R-CNN (TorchScript exporter, opset >= 11). Pieces of the traced copy
(`traceable_copy`) are swapped for equivalents: the resize, whose traced form loses a row at
some sizes; the RoI-pooling merge, whose traced form is a third of the run time; the RPN's
proposal step, which here decodes only the anchors it keeps and stops its NMS once it has
`post_nms_top_n` boxes (the same proposals); and, for one-channel images with one mean and
std, normalise and resize on one plane before it is repeated (the same pixels).

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
from typing import Any

import torch
from torch import nn
from torch.onnx import operators
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, permute_and_flatten
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign, nms, roi_align
from torchvision.ops import boxes as box_ops
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from defects.kinds.fasterrcnn.net import Detector

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
    # torch.arange takes a 0-d tensor end (traced, the size stays dynamic); its declared
    # overloads list numbers only.
    dst = torch.arange(size_out[0], dtype=torch.int64).to(torch.float32)  # type: ignore[call-overload]
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


def _resize_then_rgb(
    self: GeneralizedRCNNTransform,
    image: torch.Tensor,
    target: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """`_exact_resize` of a one-channel image, then the channel repeated to the backbone's
    three. Eager repeats first and normalises and resizes three equal planes; with one mean
    and one std for every channel each plane gets the same arithmetic, so resizing one and
    repeating it gives the same bits at a third of the cost (the resize was ~6 % of the
    graph's time on a 384x256 radiograph)."""
    image, target = _exact_resize(self, image, target)
    return image.expand(3, -1, -1), target


def _one_channel_transform(transform: GeneralizedRCNNTransform, channels: int) -> bool:
    """Give the traced copy's transform one mean and one std where normalising and resizing
    one plane is exact (see `_resize_then_rgb`); returns whether it did."""
    uniform = all(len(set(map(float, v))) == 1 for v in (transform.image_mean, transform.image_std))
    if channels != 1 or not uniform:
        return False
    transform.image_mean = list(transform.image_mean[:1])
    transform.image_std = list(transform.image_std[:1])
    return True


def _level_anchors(
    index: torch.Tensor, base: torch.Tensor, width: int | torch.Tensor, stride: list[torch.Tensor]
) -> torch.Tensor:
    """The anchors at flat indices (position * A + anchor) of one level, as torchvision's
    `AnchorGenerator.grid_anchors` lays them out: integer shifts plus the rounded cell
    anchors, so every value is the same float."""
    count = base.shape[0]
    position = torch.div(index, count, rounding_mode="floor")
    which = index - position * count
    shift_x = (position % width) * stride[1]
    shift_y = torch.div(position, width, rounding_mode="floor") * stride[0]
    return torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1) + base[which]


class _FirstKept(torch.autograd.Function):
    """torchvision's `nms`, cut to the first `count` boxes it keeps.

    Exported as ONNX `NonMaxSuppression` with `max_output_boxes_per_class` = `count`, so the
    runtime stops once it has them. Greedy NMS keeps a box by comparing it with the boxes
    kept before it only, so the first `count` are the same whether it stops there or runs
    through every box (the RPN's NMS over ~1.8k proposals kept 300: 3 ms of a ~60 ms graph).
    """

    @staticmethod
    def forward(
        ctx: Any, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, count: int
    ) -> torch.Tensor:
        return nms(boxes, scores, iou_threshold)[:count]

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, iou_threshold: float, count: int) -> Any:
        def constant(value: list | int, dtype: torch.dtype = torch.int64) -> Any:
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        first = constant([0])
        scores = g.op("Unsqueeze", g.op("Unsqueeze", scores, first), first)
        kept = g.op(
            "NonMaxSuppression",
            g.op("Unsqueeze", boxes, first),
            scores,
            constant([count]),
            constant([iou_threshold], torch.float32),
        )
        return g.op("Gather", kept, constant(2), axis_i=1)  # rows are (image, class, box)


def _batched_nms_first(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float, count: int
) -> torch.Tensor:
    """`batched_nms(...)[:count]` by torchvision's traced rule (each group's boxes shifted
    beyond the others', `_batched_nms_coordinate_trick`), through `_FirstKept`. The largest
    coordinate is taken with a 0 beside the boxes, which changes nothing for clipped boxes
    and needs no branch for an empty set."""
    top = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes) * (top + torch.tensor(1).to(boxes))
    return _FirstKept.apply(boxes + offsets[:, None], scores, iou, count)


def _select_then_decode(
    self: RegionProposalNetwork,
    images: ImageList,
    features: dict[str, torch.Tensor],
    targets: list[dict[str, torch.Tensor]] | None = None,
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Eval-time RPN for one image: the proposals of torchvision's `forward`, found in an
    order that does less work.

    torchvision builds every anchor (~50k on a 384x256 image with 25 per location) and
    decodes every box, then keeps the `pre_nms_top_n` best objectness logits per level. The
    choice depends on the logits alone, so here each level picks first and builds and decodes
    only the anchors it keeps: the same elementwise arithmetic on the same values, hence the
    same proposals. Then torchvision's own tail: sigmoid, clip, small boxes, score floor, NMS
    per level, `post_nms_top_n` (an NMS that stops there, `_FirstKept`).
    """
    if self.training or targets is not None or images.tensors.shape[0] != 1:
        return RegionProposalNetwork.forward(self, images, features, targets)
    maps = list(features.values())
    logits, deltas = self.head(maps)
    image_size = images.tensors.shape[-2:]
    self.anchor_generator.set_cell_anchors(maps[0].dtype, maps[0].device)
    cells = self.anchor_generator.cell_anchors
    boxes, scores, levels = [], [], []
    for level, (logit, delta, base) in enumerate(zip(logits, deltas, cells, strict=True)):
        _, count, height, width = logit.shape
        stride = [
            torch.empty((), dtype=torch.int64).fill_(image_size[0] // height),
            torch.empty((), dtype=torch.int64).fill_(image_size[1] // width),
        ]
        objectness = permute_and_flatten(logit, 1, count, 1, height, width).reshape(-1)
        top = det_utils._topk_min(objectness, self.pre_nms_top_n(), 0)
        best, index = objectness.topk(top, dim=0)
        codes = permute_and_flatten(delta, 1, count, 4, height, width).reshape(-1, 4)[index]
        anchors = _level_anchors(index, base, width, stride)
        boxes.append(self.box_coder.decode_single(codes.detach(), anchors))
        scores.append(best)
        levels.append(torch.full_like(index, level))
    proposals = box_ops.clip_boxes_to_image(torch.cat(boxes), images.image_sizes[0])
    probability, level_of = torch.sigmoid(torch.cat(scores)), torch.cat(levels)
    keep = box_ops.remove_small_boxes(proposals, self.min_size)
    proposals, probability, level_of = proposals[keep], probability[keep], level_of[keep]
    keep = torch.where(probability >= self.score_thresh)[0]
    proposals, probability, level_of = proposals[keep], probability[keep], level_of[keep]
    top_n = self.post_nms_top_n()
    keep = _batched_nms_first(proposals, probability, level_of, self.nms_thresh, top_n)
    return [proposals[keep]], {}


class _SingleImage(nn.Module):
    """One image in, the three detection tensors out: the shape ONNX can carry.

    `gray`: the image stays one channel into the transform, which repeats it after resizing
    (`_one_channel_transform`); otherwise `Detector` repeats it first, as in training.
    """

    def __init__(self, detector: Detector, gray: bool = False):
        super().__init__()
        self.detector = detector
        self.gray = gray

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        run = self.detector.model if self.gray else self.detector
        out = run([image])[0]
        return out["boxes"], out["labels"], out["scores"]


def traceable_copy(detector: Detector, channels: int) -> _SingleImage:
    """An eval-mode CPU copy of `detector` with the swaps of this module, behind the
    one-image interface that is traced; `detector` itself is left as it was."""
    detector = copy.deepcopy(detector).cpu().eval()
    transform = detector.model.transform
    gray = _one_channel_transform(transform, channels)
    transform.resize = types.MethodType(_resize_then_rgb if gray else _exact_resize, transform)
    rpn = detector.model.rpn
    rpn.forward = types.MethodType(_select_then_decode, rpn)
    heads = detector.model.roi_heads
    if isinstance(heads.box_roi_pool, MultiScaleRoIAlign):
        heads.box_roi_pool = _PoolThenHead(heads.box_roi_pool, heads.box_head)
        heads.box_head = nn.Identity()
    return _SingleImage(detector, gray).eval()


def export_detector(
    detector: Detector,
    path: str | Path,
    channels: int,
    example_hw: tuple[int, int] = (256, 384),
    opset: int = OPSET,
) -> Path:
    """Write `detector` as an ONNX graph with dynamic height and width; returns `path`.

    A private eval-mode copy is traced (`traceable_copy`: the exporter would otherwise flip
    the caller's training flags back), and the file appears only once complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = traceable_copy(detector, channels)
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
