"""What a killed training run resumes from: `last.ckpt`, written whole, every epoch.

Lightning's `ModelCheckpoint(save_last=True)` refreshes `last.ckpt` only when it saves a
best checkpoint, so a run whose metric stopped improving resumed from that old epoch and
redid every epoch since. Here:

- `LatestCheckpoint` writes `last.ckpt` at the end of every training epoch (after its
  validation) and, optionally, every N optimizer steps of long epochs; `ckpt_path=last`
  resumes from it (Lightning picks the newest `last*.ckpt` of the checkpoint folders).
- `AtomicCheckpointIO` writes each checkpoint to a temp file beside it, fsyncs it and renames
  it in: a kill leaves the previous checkpoint, never half a file (Lightning's own writer
  stages in the system temp folder, a copy rather than a rename across filesystems).
- `ResumeState` adds what Lightning leaves out: every rank's global random streams (Python,
  NumPy, torch, CUDA; the train loader's own are the data module's state,
  `defects.data.loaders.ResumableLoader`), so a resumed run draws the same shuffles and
  augmentations as one never stopped, and the MLflow run that wrote the checkpoint: a
  resumed run is tagged with it, and that run, left RUNNING by the kill, is marked KILLED.

Weights, optimizer, LR scheduler, loop counters and the callbacks' states (best score,
metrics history) are Lightning's part of the checkpoint; a model's EMA weights are part of
its state_dict (`defects.kinds.yolo.recipe.ModelEMA` is a submodule with a buffer).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from defects.formats.io import atomic_write_bytes, remove_stale_temps
from defects.tracking import mlflow_loggers

log = logging.getLogger("defects")

#: the tag a resumed MLflow run carries: the id of the run whose checkpoint it resumed
RESUMED_FROM = "defects.resumed_from"
#: the tag the killed run gets: the run that took over from it
RESUMED_BY = "defects.resumed_by"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints written whole (temp file, fsync, rename); others as Lightning does
    (an object store writes an object whole)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        remove_stale_temps(path)  # a run killed mid-write left one (checkpoint-sized)


class LatestCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt` at every training epoch's end and every `every_n_steps` steps.

    Lightning's trigger takes epochs or steps, not both; the step saves are added here, and
    skipped on an epoch's last batch, whose checkpoint is the epoch's (after validation).
    A step checkpoint resumes mid-epoch: Lightning restarts that epoch's loader, so the
    batches after it are not the ones an uninterrupted run would have drawn.
    """

    def __init__(self, dirpath: str, every_n_steps: int | None = None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_steps: must be at least 1 (or null), "
                f"got {every_n_steps}"
            )
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        self.every_n_steps = every_n_steps

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fit_loop.restarted_on_epoch_end:
            return  # a resumed run replays the end of the epoch it resumed from: saved already
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step = trainer.global_step
        if (
            not self.every_n_steps
            or step % self.every_n_steps
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            or self._should_skip_saving_checkpoint(trainer)
        ):
            return
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


def rng_state() -> dict[str, Any]:
    """This process's global random streams, in types `torch.load(weights_only=True)` reads."""
    states = _collect_rng_states()
    name, keys, pos, has_gauss, cached = states.pop("numpy")
    states["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]
    return states


def set_rng_state(states: dict[str, Any]) -> None:
    name, keys, pos, has_gauss, cached = states["numpy"]
    keys = keys.numpy().astype(np.uint32)
    _set_rng_states({**states, "numpy": (name, keys, pos, has_gauss, cached)})


class ResumeState(L.Callback):
    """Every rank's random streams and the MLflow run, saved in each checkpoint (see the
    module's docstring); put back when a run resumes from one."""

    def __init__(self) -> None:
        self.previous_run: str | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer  # state_dict() is called without it

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None:
            return {}
        mine = rng_state()
        states = [mine]
        if trainer.world_size > 1:  # every rank dumps the checkpoint; rank 0 writes it
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, mine)
            states = gathered
        runs = [logger.run_id for logger in mlflow_loggers(trainer)]
        return {"rng": states, "mlflow_run_id": runs[0] if runs else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("rng") or []
        rank = self._trainer.global_rank if self._trainer is not None else 0
        if rank < len(states):
            # Now, as `fit` restores the checkpoint: the next draw is the resumed epoch's
            # loader iterator, as it was the unbroken run's next draw after the checkpoint.
            set_rng_state(states[rank])
        else:
            log.warning(
                "checkpoint holds random state for %d rank(s), not rank %d: this rank starts "
                "from the seed, so its draws differ from an uninterrupted run's",
                len(states),
                rank,
            )
        self.previous_run = state_dict.get("mlflow_run_id")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.previous_run and trainer.is_global_zero:
            for logger in mlflow_loggers(trainer):
                link_runs(logger.experiment, self.previous_run, logger.run_id)


def link_runs(client: Any, previous: str, current: str | None) -> None:
    """Tag `current` as resumed from `previous`; a `previous` still RUNNING (killed, so it
    never said otherwise) is marked KILLED and tagged with its successor."""
    from mlflow.exceptions import MlflowException

    if current is None or current == previous:
        return
    client.set_tag(current, RESUMED_FROM, previous)
    try:
        status = client.get_run(previous).info.status
    except MlflowException:
        log.warning("resumed from MLflow run %s, which this tracking store lacks", previous)
        return
    client.set_tag(previous, RESUMED_BY, current)
    if status == "RUNNING":
        client.set_terminated(previous, "KILLED")
        status = "KILLED"
    log.info("MLflow run %s (%s) resumed as run %s", previous, status, current)
