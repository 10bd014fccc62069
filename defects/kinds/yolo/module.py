"""The YOLO LightningModule: Ultralytics' network and loss, trained by Lightning.

Manual optimisation, because the recipe (`recipe.py`) sets each group's rate and momentum per
iteration, ramps the accumulation count during warm-up, and updates the EMA after every
optimizer step. That also avoids a trap: Lightning's automatic accumulation divides the loss by
`accumulate_grad_batches`, while Ultralytics' loss is already a sum over the batch
(x batch size), meant to be summed over a nominal batch of `nominal_batch` images.
Validation scores the EMA weights through the same letterbox and NMS as the predictor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from defects.kinds.schedule import budget_share
from defects.kinds.yolo import adapter
from defects.kinds.yolo.boxes import letterbox
from defects.kinds.yolo.net import YoloNet
from defects.kinds.yolo.predictor import POSTPROCESS_KEYS, YoloRunner
from defects.kinds.yolo.recipe import ModelEMA, Warmup, WarmupOptions, parameter_groups
from defects.metrics.detection import make_map_metric, summarize_map


class YoloModule(L.LightningModule):
    def __init__(
        self,
        class_names: list[str],
        model_yaml: str | dict[str, Any] = "yolo12n.yaml",
        channels: int = 3,
        imgsz: int = 320,
        weights: str | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        weight_decay: float = 0.0005,
        nominal_batch: int = 64,
        grad_clip: float = 10.0,
        loss_gains: dict[str, float] | None = None,
        warmup: WarmupOptions | None = None,
        lrf: float = 0.01,
        decay_over_budget: bool = False,
        ema_decay: float = 0.9999,
        ema_tau: float = 2000.0,
        norm_momentum: float | None = None,
        conf: float = 0.001,
        iou: float = 0.7,
        max_det: int = 300,
        score_threshold: float = 0.25,
        rect: bool = True,
        monitor: str = "val/mAP",
    ):
        super().__init__()
        spec = adapter.model_yaml(model_yaml) if isinstance(model_yaml, str) else dict(model_yaml)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "model_yaml"])
        self.hparams["model_yaml"] = spec  # the dict, so the bundle rebuilds without the file
        self.automatic_optimization = False
        self.optimizer_factory = optimizer
        self.class_names = list(class_names)
        self.net = YoloNet(spec, len(self.class_names), channels)
        if weights:
            from defects.kinds.weights import load_local_weights

            load_local_weights(self.net, weights)
        if norm_momentum is not None:
            # Ultralytics' 0.03 suits hundreds of epochs; in a short run the running stats
            # lag the weights and eval-mode outputs are far off the train-mode ones.
            for layer in self.net.modules():
                if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                    layer.momentum = float(norm_momentum)
        self.ema = ModelEMA(self.net, ema_decay, ema_tau)
        self.gains = {"box": 7.5, "cls": 0.5, "dfl": 1.5, **(loss_gains or {})}
        self.warmup_args = WarmupOptions(**(warmup or {}))
        self.criterion: Any = None
        self.val_map = make_map_metric()
        self._pending = 0  # batches accumulated since the last optimizer step
        self._budget: Callable[[], float] | None = None  # share of trainer.max_time used

    # ------------------------------------------------------------------ data
    def to_yolo_batch(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Images letterboxed to `imgsz`, boxes as Ultralytics' loss reads them: normalised
        centre-x, centre-y, width, height, with the image index and 0-based class."""
        size = self.hparams["imgsz"]
        canvases, idx, cls, boxes = [], [], [], []
        for i, (image, target) in enumerate(zip(images, targets, strict=True)):
            canvas, place = letterbox(image, size)
            canvases.append(canvas)
            xyxy = target["boxes"].float() * place.scale
            xyxy[:, [0, 2]] += place.pad_x
            xyxy[:, [1, 3]] += place.pad_y
            xywh = torch.cat(((xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), 1)
            boxes.append(xywh / size)
            cls.append(target["labels"].float() - 1)
            idx.append(torch.full((len(xyxy),), float(i), device=xyxy.device))
        batch = {"batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(boxes)}
        return torch.cat(canvases), batch

    # ------------------------------------------------------------------ training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ema.module(x)

    def _optimizer(self) -> LightningOptimizer:
        # `configure_optimizers` returns one optimizer, which Lightning hands back unlisted;
        # `optimizers()`'s declared type also allows the list of several.
        return cast(LightningOptimizer, self.optimizers())

    def _schedule(self) -> Warmup:
        batches = max(int(self.trainer.num_training_batches), 1)
        optimizer = self._optimizer().optimizer
        return Warmup(
            lr=float(optimizer.defaults["lr"]),
            epochs=int(self.trainer.max_epochs or 1),
            iters_per_epoch=batches,
            lrf=self.hparams["lrf"],
            **self.warmup_args,
        )

    def accumulate(self, iteration: int, warmup_iters: int, batch_size: int) -> int:
        """Batches per optimizer step: ramps from 1 to nominal/batch during warm-up."""
        full = max(round(self.hparams["nominal_batch"] / batch_size), 1)
        if iteration >= warmup_iters:
            return full
        return max(1, int(np.interp(iteration, [0, warmup_iters], [1, full]).round()))

    def on_train_start(self) -> None:
        if self.hparams["decay_over_budget"]:
            self._budget = budget_share(self.trainer)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        x, labels = self.to_yolo_batch(images, targets)
        if self.criterion is None:  # built on the device: the loss caches it
            self.criterion = adapter.detection_loss(self.net.model, **self.gains)
        loss_vector, items = self.criterion(self.net(x), labels)
        loss = loss_vector.sum()
        self.manual_backward(loss)

        optimizer = self._optimizer()
        schedule = self._schedule()
        iteration = self.current_epoch * schedule.iters_per_epoch + batch_idx
        budget = self._budget() if self._budget is not None else 0.0
        schedule.apply(optimizer.optimizer, iteration, self.current_epoch, budget)
        self._pending += 1
        last = batch_idx + 1 == schedule.iters_per_epoch
        if self._pending >= self.accumulate(iteration, schedule.warmup_iters, len(images)) or last:
            # A LightningOptimizer subclasses its optimizer's class at run time (see
            # lightning.pytorch.core.optimizer), which its static type cannot say.
            wrapped = cast(torch.optim.Optimizer, optimizer)
            self.clip_gradients(wrapped, self.hparams["grad_clip"], "norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.ema.update(self.net)
            self._pending = 0
        size = len(images)
        self.log("train/loss", loss / size, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in items.items()}, batch_size=size)
        self.log("train/lr", optimizer.optimizer.param_groups[0]["lr"], batch_size=size)
        return loss

    # ------------------------------------------------------------------ validation
    def postprocess(self) -> dict[str, Any]:
        """What the runner needs besides the network (stored in the bundle)."""
        return {
            **{key: self.hparams[key] for key in POSTPROCESS_KEYS},
            "stride": max(self.net.strides),
        }

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The predictor's path on the EMA weights: letterbox, network, NMS, original pixels."""
        return YoloRunner(self, self.postprocess())(images)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        preds = self.detect(images)
        self.val_map.update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.val_map.reset()
        self.log_dict(summarize_map(result, self.class_names, "val"))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer: no optimizer configured")
        # Lightning sets `trainer.datamodule` at run time (None without a DataModule); the
        # Trainer class does not declare it.
        datamodule = getattr(self.trainer, "datamodule", None)
        batch = int(getattr(datamodule, "batch_size", 16) or 16)
        nominal = self.hparams["nominal_batch"]
        accumulate = max(round(nominal / batch), 1)
        decay = self.hparams["weight_decay"] * batch * accumulate / nominal
        return self.optimizer_factory(params=parameter_groups(self.net, decay))
