"""Close-mosaic: train the last epochs on whole images, as Ultralytics' recipe does."""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger("defects")


class CloseMosaic(L.Callback):
    """Turn the train split's Mosaic (and MixUp) off for the last `epochs` epochs."""

    def __init__(self, epochs: int = 10):
        self.epochs = int(epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning sets `trainer.datamodule` at run time (None without a DataModule); the
        # Trainer class does not declare it.
        datasets = getattr(getattr(trainer, "datamodule", None), "datasets", {})
        dataset = datasets.get("train")
        switch = getattr(dataset, "mosaic", None)
        if switch is None or not switch.key:
            return
        closing = trainer.current_epoch >= (trainer.max_epochs or 0) - self.epochs
        if closing == switch.on:
            switch.set(not closing)
            log.info("epoch %d: mosaic %s", trainer.current_epoch, "off" if closing else "on")
