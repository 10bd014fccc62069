"""torchvision Faster R-CNN built from plain config values, with its pre-processing inside.

The same `Detector.forward` serves training, evaluation, the predictor and export, so the
channel handling and normalisation can never drift between them.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision.models.detection as tvd
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead

from defects.kinds.weights import is_local_file, load_local_weights

ARCHITECTURES = {
    "fasterrcnn_mobilenet_v3_large_fpn": tvd.fasterrcnn_mobilenet_v3_large_fpn,
    "fasterrcnn_mobilenet_v3_large_320_fpn": tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
    "fasterrcnn_resnet50_fpn": tvd.fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": tvd.fasterrcnn_resnet50_fpn_v2,
}


def build_faster_rcnn(
    num_classes: int,
    arch: str = "fasterrcnn_mobilenet_v3_large_fpn",
    min_size: int = 256,
    max_size: int = 384,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    weights: str | None = None,
    weights_backbone: str | None = None,
    trainable_backbone_layers: int | None = None,
    representation_size: int | None = None,
    anchor_sizes: list[int] | None = None,
    aspect_ratios: list[float] | None = None,
    norm_momentum: float | None = None,
    returned_layers: list[int] | None = None,
    **kwargs: Any,
) -> tvd.FasterRCNN:
    """Faster R-CNN for `num_classes` (background included) with no download by default.

    `representation_size` narrows the box head's two 1024-wide layers, which dominate a CPU
    training step. `anchor_sizes`/`aspect_ratios` (height/width) replace the RPN anchors on
    every feature level: defects such as lack of fusion are far longer than torchvision's 2:1
    anchors. `norm_momentum` resets BatchNorm momentum: MobileNetV3 ships 0.01, tuned for
    fine-tuning, which leaves running statistics far behind a from-scratch model for hundreds
    of steps, so validation sees a different network than training. torchvision's
    `**kwargs` (e.g. `box_batch_size_per_image`) pass through.

    `returned_layers` (MobileNet archs) picks the backbone stages the FPN sees. torchvision
    feeds it two stride-32 stages only, which blurs defects a few pixels wide; [2, 3, 5]
    adds stride 8 and 16.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown detector arch '{arch}'; choose one of {sorted(ARCHITECTURES)}")
    builder = ARCHITECTURES[arch]
    hub_weights = None if is_local_file(weights) else weights
    hub_backbone = None if is_local_file(weights_backbone) else weights_backbone
    options = dict(
        min_size=min_size,
        max_size=max_size,
        image_mean=image_mean or [0.485, 0.456, 0.406],
        image_std=image_std or [0.229, 0.224, 0.225],
        trainable_backbone_layers=trainable_backbone_layers,
        **kwargs,
    )
    if returned_layers is not None:
        if hub_weights or not arch.startswith("fasterrcnn_mobilenet"):
            raise ValueError("returned_layers: MobileNet archs without hub weights only")
        model = _mobilenet_fpn_detector(num_classes, returned_layers, hub_backbone, options)
    elif hub_weights:
        # Hub detector weights carry COCO's 91 classes: load them, then swap the box head.
        model = builder(weights=hub_weights, weights_backbone=hub_backbone, **options)
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    else:
        model = builder(
            weights=None, weights_backbone=hub_backbone, num_classes=num_classes, **options
        )
    if representation_size:
        head_in = model.roi_heads.box_head.fc6.in_features
        model.roi_heads.box_head = TwoMLPHead(head_in, representation_size)
        model.roi_heads.box_predictor = FastRCNNPredictor(representation_size, num_classes)
    if anchor_sizes or aspect_ratios:
        default = model.rpn.anchor_generator
        sizes = tuple(anchor_sizes) if anchor_sizes else default.sizes[0]
        ratios = tuple(aspect_ratios) if aspect_ratios else default.aspect_ratios[0]
        levels = len(default.sizes)
        model.rpn.anchor_generator = AnchorGenerator((sizes,) * levels, (ratios,) * levels)
        in_channels = model.rpn.head.conv[0][0].in_channels
        model.rpn.head = RPNHead(in_channels, len(sizes) * len(ratios))
    if norm_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = norm_momentum
    if is_local_file(weights):
        load_local_weights(model, weights)
    if is_local_file(weights_backbone):
        load_local_weights(model.backbone.body, weights_backbone)
    return model


def _mobilenet_fpn_detector(
    num_classes: int, returned_layers: list[int], weights_backbone: str | None, options: dict
) -> tvd.FasterRCNN:
    """torchvision's MobileNetV3-Large FPN detector with a chosen set of FPN stages."""
    options = dict(options)
    trainable = options.pop("trainable_backbone_layers", None)
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=weights_backbone,
        fpn=True,
        norm_layer=nn.BatchNorm2d,
        trainable_layers=6 if trainable is None else trainable,
        returned_layers=list(returned_layers),
    )
    levels = len(returned_layers) + 1  # + the max-pool level
    anchors = AnchorGenerator(((32, 64, 128, 256, 512),) * levels, ((0.5, 1.0, 2.0),) * levels)
    return tvd.FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchors, **options)


class Detector(nn.Module):
    """Images in (lists of [C,H,W] floats in 0..1, any C), detections out.

    Radiographs are grayscale: one channel is repeated to the three the backbone expects,
    and normalisation uses the configured mean/std inside the torchvision transform.
    """

    def __init__(self, num_classes: int, **net: Any):
        super().__init__()
        self.model = build_faster_rcnn(num_classes, **net)

    @staticmethod
    def to_rgb(images: list[torch.Tensor]) -> list[torch.Tensor]:
        return [img.expand(3, -1, -1) if img.shape[0] == 1 else img for img in images]

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> Any:
        """Loss dict when training with targets; list of {boxes, labels, scores} otherwise."""
        return self.model(self.to_rgb(images), targets)
