"""How many loader worker processes a training run gets.

On a CPU-only run the workers and the training step share the same few cores: a worker
preparing the next batch takes a core from torch's intra-op threads, whose OpenMP pool then
waits on it. Measured on 2 cores (benchmarks/bench_train_speed.py, NEU-DET YOLO epoch):
78.6 s with one worker beside two torch threads, 59.6 s with the batch prepared in the
training process. On an accelerator the step runs elsewhere and workers overlap for free.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.accelerators import CPUAccelerator

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
