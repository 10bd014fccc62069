"""Train loaders: how many worker processes they get, and their random state for resuming.

On a CPU-only run the workers and the training step share the same few cores: a worker
preparing the next batch takes a core from torch's intra-op threads, whose OpenMP pool then
waits on it. Measured on 2 cores (benchmarks/bench_train_speed.py, NEU-DET YOLO epoch):
78.6 s with one worker beside two torch threads, 59.6 s with the batch prepared in the
training process. On an accelerator the step runs elsewhere and workers overlap for free.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.accelerators import CPUAccelerator
from torch.utils.data import DataLoader

AUTO = "auto"


def loader_workers(num_workers: int | str, trainer: Any = None) -> int:
    """`num_workers` as configured; "auto": none when the attached trainer trains on the
    CPU (or there is no trainer: evaluation, prediction), else up to 4, one core left free."""
    if num_workers != AUTO:
        count = int(num_workers)
        if count < 0:
            raise ValueError(f"data.num_workers: must be >= 0 or '{AUTO}', got {num_workers}")
        return count
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is None or isinstance(accelerator, CPUAccelerator):
        return 0
    return max(0, min(4, (len(os.sched_getaffinity(0)) or 1) - 1))


def _generators(loader: DataLoader) -> list[torch.Generator]:
    """The loader's own generators: its base-seed one and its sampler's, each once."""
    found: list[torch.Generator] = []
    for generator in (loader.generator, getattr(loader.sampler, "generator", None)):
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def _streams(transform: Any) -> list[Any]:
    """The albumentations pipeline's nodes that own random generators, in a fixed order:
    `A.Compose(seed=...)` gives itself and every transform in it a NumPy and a Python
    generator of their own."""
    if transform is None:
        return []
    own = [transform] if hasattr(transform, "random_generator") else []
    children = getattr(transform, "transforms", [])
    return own + [node for child in children for node in _streams(child)]


def loader_state(loader: DataLoader) -> dict[str, Any]:
    """The random streams a loader keeps apart from the global ones: its generators
    (shuffling, worker seeds) and its dataset's augmentation pipeline's."""
    transform = getattr(loader.dataset, "transform", None)
    return {
        "generators": [g.get_state() for g in _generators(loader)],
        "transforms": [
            {
                "numpy": node.random_generator.bit_generator.state,
                "python": node.py_random.getstate(),
            }
            for node in _streams(transform)
        ],
    }


def set_loader_state(loader: DataLoader, state: dict[str, Any]) -> None:
    generators = _generators(loader)
    nodes = _streams(getattr(loader.dataset, "transform", None))
    if len(generators) != len(state["generators"]) or len(nodes) != len(state["transforms"]):
        raise ValueError(
            f"checkpoint: the train loader had {len(state['generators'])} generator(s) and "
            f"{len(state['transforms'])} random transform(s), this one has {len(generators)} "
            f"and {len(nodes)} (was the data config changed?)"
        )
    for generator, saved in zip(generators, state["generators"], strict=True):
        generator.set_state(saved)
    for node, saved in zip(nodes, state["transforms"], strict=True):
        node.random_generator.bit_generator.state = saved["numpy"]
        node.py_random.setstate(saved["python"])


class ResumableLoader:
    """LightningDataModule mix-in: the train loader's random streams (`loader_state`) go in
    each checkpoint, every rank's, and a resumed run's train loader starts from them.

    Lightning keeps a data module's `state_dict` in the checkpoint and hands it back to
    `load_state_dict` before it asks for the loaders, and a resumed run's first epoch uses
    the iterator built right after `train_dataloader`, so the loader draws what the unbroken
    run drew after the checkpoint. `train_dataloader` wraps its loader in `resumable`.
    """

    _train_loader: DataLoader | None = None
    _saved_loader: dict[str, Any] | None = None

    def resumable(self, loader: DataLoader) -> DataLoader:
        if self._saved_loader is not None:
            set_loader_state(loader, self._saved_loader)
            self._saved_loader = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        if self._train_loader is None:
            return {}
        mine = loader_state(self._train_loader)
        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
            return {"train_loader": [mine]}
        ranks: list[Any] = [None] * dist.get_world_size()  # every rank dumps a checkpoint
        dist.all_gather_object(ranks, mine)
        return {"train_loader": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("train_loader") or []
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self._saved_loader = ranks[rank] if rank < len(ranks) else None
