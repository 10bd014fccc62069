"""The segmentation LightningModule (steel now, pipe later): gate + masks, one loss.

Loss = pixel BCE (optional per-class positive weights) + smp's multilabel Dice loss (per class
over the batch, classes absent from the batch left out, so empty crops do not drown the
defects) + BCE of the gate against "this class is present in the crop" (or, for the
`separate` gate, in each cell of its coarse grid). Validation scores
Kaggle Dice through the gate at the configured thresholds (`val/dice*`) and of the segmenter
alone (`val/seg_dice*`, the gate ignored): early in training the gate is closed and only the
second shows progress. The train stage tunes the thresholds at the end.

Under DDP every validation number covers all ranks' images: the Dice sums, the gate scores
and their image truths are torchmetrics states (summed / concatenated across ranks when
computed), and the per-rank validation loss is logged with `sync_dist`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerConfig, OptimizerLRSchedulerConfig
from segmentation_models_pytorch.losses import DiceLoss
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from defects.kinds.gated.flow import pad_to_stride
from defects.kinds.gated.net import Segmenter
from defects.kinds.gated.thresholds import Thresholds, binarize, gate_scores
from defects.kinds.schedule import configure_optimizers
from defects.metrics.segmentation import SeverstalDice


def gate_targets(
    out: dict[str, torch.Tensor], masks: torch.Tensor, cell: tuple[float, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate logits, 0/1 targets): per cell of the gate's grid where the network has one,
    else per image ("this class is in the crop").

    A cell's target is "the class is in the block of `cell` input pixels the cell covers":
    the masks zero-padded to whole cells and max-pooled block by block. Splitting the crop
    evenly over the grid instead (adaptive pooling) misplaces labels whenever the last cell
    hangs past the image edge, as it does for a 320-px crop under 256-px cells.
    """
    grid = out.get("gate_grid")
    if grid is None:
        return out["gate_logits"].float(), masks.flatten(2).amax(-1)
    if cell is None:
        raise ValueError("gate_targets: a gate grid needs the cell size it was computed with")
    (rows, cols), (cy, cx) = grid.shape[-2:], cell
    covered = (round(rows * cy), round(cols * cx))  # input pixels the whole grid spans
    masks = masks[..., : covered[0], : covered[1]]
    masks = F.pad(masks, (0, covered[1] - masks.shape[-1], 0, covered[0] - masks.shape[-2]))
    if float(cy).is_integer() and float(cx).is_integer():
        return grid.float(), F.max_pool2d(masks, (int(cy), int(cx)))
    return grid.float(), F.adaptive_max_pool2d(masks, (rows, cols))


class GateRecords(Metric):
    """Each validation image's gate score (max over classes) and whether it has a defect.

    Both are `cat` states, so under DDP `compute` returns every rank's images, pairs kept
    aligned (one metric, gathered rank by rank).
    """

    full_state_update = False
    # torchmetrics' convention for `cat` states: lists of batches (one tensor only inside
    # `compute`, once synced across ranks, which `compute` below handles).
    gate: list[torch.Tensor]
    truth: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("gate", default=[], dist_reduce_fx="cat")
        self.add_state("truth", default=[], dist_reduce_fx="cat")

    def update(self, gate: torch.Tensor, truth: torch.Tensor) -> None:
        if gate.shape != truth.shape or gate.ndim != 1:
            raise ValueError(f"gate and truth must both be [N], got {gate.shape}, {truth.shape}")
        self.gate.append(gate.detach().float())
        self.truth.append(truth.detach().bool())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate [N], truth [N] bool) over all images seen (all ranks); empty if none.

        torchmetrics squeezes a one-element result to 0-d: reshape(-1) what this returns."""
        # Lists of batches here; one tensor once synced across ranks.
        if isinstance(self.gate, list) and not self.gate:
            return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
        return dim_zero_cat(self.gate), dim_zero_cat(self.truth)


class SegmentationModule(L.LightningModule):
    """Trains any `Segmenter` design; plain-value hyper-parameters only."""

    pos_weight: torch.Tensor  # a buffer

    def __init__(
        self,
        class_names: list[str],
        net: dict[str, Any],
        design: Literal["separate", "two_heads", "shared_backbone"] = "separate",
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        pos_weight: list[float] | None = None,
        dice_weight: float = 1.0,
        gate_weight: float = 0.5,
        thresholds: dict[str, Any] | None = None,
        monitor: str = "val/dice",
        exclusive: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.class_names = list(class_names)
        self.net = Segmenter(len(self.class_names), design=design, **net)
        if pos_weight is not None and len(pos_weight) != len(self.class_names):
            raise ValueError(
                f"model.pos_weight: {len(pos_weight)} values for {len(self.class_names)} classes"
            )
        weight = torch.tensor(pos_weight or [1.0] * len(self.class_names)).view(1, -1, 1, 1)
        self.register_buffer("pos_weight", weight, persistent=False)
        self.thresholds = Thresholds.from_dict(thresholds or {}, len(self.class_names))
        self.dice_loss = DiceLoss("multilabel", from_logits=True)
        self.val_dice = SeverstalDice(self.class_names)
        self.val_seg_dice = SeverstalDice(self.class_names)
        self.val_gate = GateRecords()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        out = self.net(pad_to_stride(images, self.net.stride))
        out["mask_logits"] = out["mask_logits"][..., :height, :width]
        return out

    def losses(self, out: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = out["mask_logits"].float()
        bce = F.binary_cross_entropy_with_logits(logits, masks, pos_weight=self.pos_weight)
        dice = self.dice_loss(logits, masks)
        cell = self.net.gate.cell if self.net.gate is not None else None
        gate = F.binary_cross_entropy_with_logits(*gate_targets(out, masks, cell))
        hp = self.hparams
        total = bce + hp["dice_weight"] * dice + hp["gate_weight"] * gate
        return {"loss": total, "bce": bce, "dice": dice, "gate": gate}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        losses = self.losses(self(images), masks)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(images))
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=len(images)
        )
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return losses["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, masks = batch
        out = self(images)
        # Each rank's own batches: averaged over ranks at epoch end (one all-reduce).
        losses = self.losses(out, masks)
        self.log("val/loss", losses["loss"], batch_size=len(images), sync_dist=True)
        gate = torch.sigmoid(out["gate_logits"].float())
        probs = torch.sigmoid(out["mask_logits"].float())
        self.val_dice.update(binarize(gate, probs, self.thresholds), masks.bool())
        ungated = Thresholds(0.0, self.thresholds.pixel, self.thresholds.min_area)
        self.val_seg_dice.update(binarize(gate, probs, ungated), masks.bool())
        self.val_gate.update(gate.max(1).values, masks.flatten(1).any(1))

    def on_validation_epoch_end(self) -> None:
        # Every value below comes from a metric that synced its states across ranks in
        # `compute`, so all ranks log the same numbers: no `sync_dist` (no extra all-reduce).
        result = {f"val/{k}": v.float() for k, v in self.val_dice.compute().items()}
        seg = self.val_seg_dice.compute()
        result.update({f"val/seg_{k}": seg[k].float() for k in ("dice", "dice_defective")})
        gate, truth = (t.reshape(-1) for t in self.val_gate.compute())
        if len(gate):
            scores = gate_scores(gate.cpu().numpy(), truth.cpu().numpy(), self.thresholds.gate)
            result.update({f"val/{k}": torch.tensor(v) for k, v in scores.items()})
        for metric in (self.val_dice, self.val_seg_dice, self.val_gate):
            metric.reset()
        self.log_dict(result)

    def configure_optimizers(self) -> OptimizerConfig | OptimizerLRSchedulerConfig:
        return configure_optimizers(
            self, self.parameters(), self.optimizer_factory, self.scheduler_factory
        )
