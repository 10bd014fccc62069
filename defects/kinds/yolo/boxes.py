"""Letterbox in, boxes out: the YOLO pre- and post-processing both backends share.

The network sees the image scaled to fit a `size` square (aspect kept) and centred on grey
(114): padded to the full square, or with `stride` (rectangular letterbox, what Ultralytics'
`predict` does) only up to the next multiple of the network's stride on each axis, which for
a 4:3 frame skips a quarter of the pixels. Its output is decoded by class-aware NMS with no
time limit (every candidate above `conf` is considered, up to `max_candidates` by score) and
mapped back to original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

PAD_VALUE = 114 / 255.0


@dataclass(frozen=True)
class Letterbox:
    """How an image of (height, width) was placed on the canvas."""

    scale: float
    pad_x: float
    pad_y: float
    height: int
    width: int


def letterbox(
    image: torch.Tensor, size: int, stride: int | None = None
) -> tuple[torch.Tensor, Letterbox]:
    """[C, H, W] in 0..1 -> ([1, C, size, size] or, with `stride`, [1, C, h, w] with h, w the
    scaled sides rounded up to a multiple of `stride`), and the placement."""
    _, height, width = image.shape
    scale = min(size / height, size / width)
    new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
    if (new_h, new_w) != (height, width):
        image = F.interpolate(
            image[None], size=(new_h, new_w), mode="bilinear", align_corners=False
        )[0]
    out_h, out_w = size, size
    if stride:
        out_h, out_w = (-(-side // stride) * stride for side in (new_h, new_w))
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas = image.new_full((image.shape[0], out_h, out_w), PAD_VALUE)
    canvas[:, top : top + new_h, left : left + new_w] = image
    return canvas[None], Letterbox(scale, float(left), float(top), height, width)


def decode(
    raw: torch.Tensor,
    placement: Letterbox,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    max_candidates: int = 30000,
) -> dict[str, torch.Tensor]:
    """One image's head output [4 + classes, anchors] -> boxes (xyxy, original pixels),
    1-based labels and scores, best first; each class suppressed on its own."""
    raw = raw.float()
    centre, half = raw[:2].T, raw[2:4].T / 2
    probs = raw[4:].T  # anchors x classes
    anchor, cls = (probs > conf).nonzero(as_tuple=True)
    scores = probs[anchor, cls]
    if scores.numel() > max_candidates:
        scores, order = scores.topk(max_candidates)
        anchor, cls = anchor[order], cls[order]
    boxes = torch.cat((centre[anchor] - half[anchor], centre[anchor] + half[anchor]), 1)
    keep = batched_nms(boxes, scores, cls, iou)[:max_det]
    boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - placement.pad_x) / placement.scale
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - placement.pad_y) / placement.scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, placement.width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, placement.height)
    return {"boxes": boxes, "labels": cls + 1, "scores": scores}
