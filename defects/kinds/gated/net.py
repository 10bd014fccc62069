"""Gate + segmenter networks for steel-style inspection, in three designs.

- `separate`: an EfficientNet classifier (the gate) on a downscaled image, and a Unet/LinkNet
  that runs only on the images the gate lets through.
- `two_heads`: one smp model with a classification head (`aux_params`); both heads always run.
- `shared_backbone`: the same network as `two_heads`, but the encoder runs once, the gate
  reads its deepest features, and the decoder runs only for images the gate lets through.

Every design is split into `parts` (plain nn.Modules with tensor inputs and outputs) so the
eager flow and the ONNX flow (`defects.kinds.gated.flow`) run the same graphs with the same
selection logic in between. Normalisation lives inside the parts; padding to the encoder
stride lives in the flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from defects.kinds.weights import is_local_file, load_local_weights

DESIGNS = ("separate", "two_heads", "shared_backbone")
ARCHS = {"unet": smp.Unet, "linknet": smp.Linknet}


class Normalize(nn.Module):
    """(x - mean) / std on [0, 1] images; part of the graph so exports need no preprocessing."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _weights(name: str | None) -> tuple[str | None, str | None]:
    """A local file is loaded by us after building; anything else is an smp hub name."""
    return (None, name) if is_local_file(name) else (name, None)


class GatePart(nn.Module):
    """`separate` design's classifier: image -> gate logits [N, K], on a downscaled copy.

    Its head scores every cell of the last feature map it computes (a 1x1 convolution) and
    the image logit is the highest cell. Training supervises the cells against a coarse
    presence grid of the masks (`grid`, `cell`), many labels per crop instead of one: an
    EfficientNet trained from scratch on a few hundred crops learns to find small defects
    that way, and the max over cells carries from training crops to whole strips unchanged.
    `depth` (encoder stages kept) sets the cell size: fewer stages give finer cells, more
    labels and a cheaper gate.
    """

    def __init__(
        self,
        encoder: str,
        in_channels: int,
        num_classes: int,
        scale: float | Sequence[float],
        norm: Normalize,
        weights: str | None = None,
        depth: int = 5,
    ):
        super().__init__()
        hub, local = _weights(weights)
        self.norm = norm
        self.scale = scale
        self.encoder = get_encoder(encoder, in_channels=in_channels, depth=depth, weights=hub)
        self.head = nn.Conv2d(self.encoder.out_channels[-1], num_classes, kernel_size=1)
        if local:
            load_local_weights(self, local)

    @property
    def cell(self) -> tuple[float, float]:
        """(height, width) in input pixels that one grid cell covers: the encoder's stride at
        the gate's scale (64 x 256 for stride 32 at [0.5, 0.125]). The last cell of an axis
        may reach past the image (the encoder rounds odd sizes up)."""
        sy, sx = _pair(self.scale)
        stride = self.encoder.output_stride
        return stride / sy, stride / sx

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """Cell logits [N, K, h, w], one cell per encoder-stride block of the scaled image."""
        return self.head(self.encoder(self.norm(rescale(x, self.scale)))[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid(x).amax(dim=(2, 3))


def _pair(scale: float | Sequence[float]) -> tuple[float, float]:
    """A scale as (height, width) factors."""
    if isinstance(scale, Sequence) and not isinstance(scale, str):
        return float(scale[0]), float(scale[1])
    return float(scale), float(scale)


def rescale(x: torch.Tensor, scale: float | Sequence[float]) -> torch.Tensor:
    """Resize by `scale` (identity at 1): the CPU budget knob for the gate and the segmenter.

    Shrinking by 1/n averages n x n blocks: bilinear sampling at 1/4 reads only 2 of every 4
    rows, so a 2-pixel scratch can vanish from the gate's view (at 1/2 both are the same).
    Growing (the masks back to full size) is bilinear. A pair is (height, width) scales.
    """
    sy, sx = _pair(scale)
    if sy == sx == 1.0:
        return x
    if sy <= 1 and sx <= 1 and (1 / sy).is_integer() and (1 / sx).is_integer():
        return F.avg_pool2d(x, (int(1 / sy), int(1 / sx)))
    return F.interpolate(x, scale_factor=(sy, sx), mode="bilinear", align_corners=False)


class SegmentPart(nn.Module):
    """Whole segmenter: image -> mask logits [N, K, H, W] (and gate logits with a head).

    The network sees the image at `scale`; its mask logits are resized back to full size.
    """

    def __init__(self, model: smp.base.SegmentationModel, norm: Normalize, scale: float = 1.0):
        super().__init__()
        self.model = model
        self.norm = norm
        self.scale = scale

    def forward(self, x: torch.Tensor) -> Any:
        out = self.model(self.norm(rescale(x, self.scale)))
        if isinstance(out, tuple):
            return rescale(out[0], 1.0 / self.scale), out[1]
        return rescale(out, 1.0 / self.scale)


class EncodePart(nn.Module):
    """`shared_backbone` first half: image -> (gate logits, *encoder features)."""

    def __init__(self, model: smp.base.SegmentationModel, norm: Normalize, scale: float = 1.0):
        super().__init__()
        self.encoder = model.encoder
        self.head = model.classification_head
        self.norm = norm
        self.scale = scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.encoder(self.norm(rescale(x, self.scale)))
        return (self.head(features[-1]), *features)


class DecodePart(nn.Module):
    """`shared_backbone` second half: encoder features -> mask logits."""

    def __init__(self, model: smp.base.SegmentationModel, scale: float = 1.0):
        super().__init__()
        self.decoder = model.decoder
        self.segmentation_head = model.segmentation_head
        self.scale = scale

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return rescale(self.segmentation_head(self.decoder(list(features))), 1.0 / self.scale)


class Segmenter(nn.Module):
    """Builds the design's networks; `forward` is the training/validation view of them.

    `forward(x)` returns {"mask_logits": [N, K, H, W], "gate_logits": [N, K]} for every image
    (no gating), which the loss and the threshold tuning need; `separate` adds
    "gate_grid" [N, K, h, w], the gate's cell logits. Gated inference is
    `defects.kinds.gated.flow.GatedFlow`, which runs `parts()`.
    """

    def __init__(
        self,
        num_classes: int,
        design: Literal["separate", "two_heads", "shared_backbone"] = "separate",
        arch: Literal["unet", "linknet"] = "unet",
        encoder: str = "timm-efficientnet-b0",
        encoder_depth: int = 5,
        decoder_channels: list[int] | None = None,
        encoder_weights: str | None = None,
        gate_encoder: str = "timm-efficientnet-b1",
        gate_scale: float | list[float] = 0.5,
        gate_weights: str | None = None,
        gate_depth: int = 5,
        input_scale: float = 1.0,
        in_channels: int = 1,
        image_mean: float = 0.5,
        image_std: float = 0.25,
    ):
        super().__init__()
        if design not in DESIGNS:
            raise ValueError(f"model.design: '{design}' is not one of {', '.join(DESIGNS)}")
        if arch not in ARCHS:
            raise ValueError(f"model.net.arch: '{arch}' is not one of {', '.join(ARCHS)}")
        if not 0 < input_scale <= 1 or not (1 / input_scale).is_integer():
            raise ValueError(f"model.net.input_scale: {input_scale} must be 1/n (1, 0.5, 0.25...)")
        self.design = design
        self.num_classes = num_classes
        self.input_scale = float(input_scale)
        # Padding target at full size: the encoder's stride at the scaled size.
        self.stride = int(2**encoder_depth / input_scale)
        self.norm = Normalize(image_mean, image_std)
        hub, local = _weights(encoder_weights)
        kwargs: dict[str, Any] = {
            "encoder_name": encoder,
            "encoder_depth": encoder_depth,
            "encoder_weights": hub,
            "in_channels": in_channels,
            "classes": num_classes,
        }
        if decoder_channels is not None and arch == "unet":  # LinkNet's widths follow its encoder
            kwargs["decoder_channels"] = list(decoder_channels)
        if design != "separate":
            kwargs["aux_params"] = {"classes": num_classes, "pooling": "max", "dropout": 0.2}
        self.model = ARCHS[arch](**kwargs)
        if local:
            load_local_weights(self.model.encoder, local)
        self.gate = (
            GatePart(
                gate_encoder,
                in_channels,
                num_classes,
                gate_scale,
                self.norm,
                gate_weights,
                gate_depth,
            )
            if design == "separate"
            else None
        )

    def parts(self) -> dict[str, nn.Module]:
        """The graphs the gated flow runs (and ONNX exports), by role, in this module's mode."""
        scale = self.input_scale
        parts: dict[str, nn.Module]
        if self.gate is not None:  # the `separate` design, the only one with a gate part
            parts = {"gate": self.gate, "segment": SegmentPart(self.model, self.norm, scale)}
        elif self.design == "two_heads":
            parts = {"segment": SegmentPart(self.model, self.norm, scale)}
        else:
            parts = {
                "encode": EncodePart(self.model, self.norm, scale),
                "decode": DecodePart(self.model, scale),
            }
        return {name: part.train(self.training) for name, part in parts.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = SegmentPart(self.model, self.norm, self.input_scale)(x)
        if self.gate is not None:  # the `separate` design
            grid = self.gate.grid(x)
            return {"mask_logits": out, "gate_logits": grid.amax(dim=(2, 3)), "gate_grid": grid}
        return {"mask_logits": out[0], "gate_logits": out[1]}
