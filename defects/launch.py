"""Runs started by an outside launcher (torchrun on each node, SLURM's srun): their layout.

Lightning finds such a launcher itself (TorchElasticEnvironment, SLURMEnvironment) but
still wants `num_nodes` and `devices` to match what the launcher started, and Hydra, run by
every process of the job, would have each write the same run folder. Here the config
reads the layout from the launcher (`${launcher:num_nodes,1}`, `${launcher:devices,2}` in
`trainer=ddp`), and `rank_overrides` gives ranks past 0 their own log name, as Lightning's
own launcher does for the processes it starts itself.
"""

from __future__ import annotations

import os
from pathlib import Path


def launched_layout() -> tuple[int, int] | None:
    """(nodes, processes per node) of an outside launcher; None without one (a plain
    command, or the processes Lightning's own launcher starts)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        # torchrun: one agent per node ("group"), LOCAL_WORLD_SIZE workers each.
        return int(os.environ["GROUP_WORLD_SIZE"]), int(os.environ["LOCAL_WORLD_SIZE"])
    if SLURMEnvironment.detect():
        # srun: Lightning itself insists on --ntasks-per-node when there is more than a task.
        nodes = int(os.environ.get("SLURM_NNODES", "1"))
        return nodes, int(os.environ.get("SLURM_NTASKS_PER_NODE", os.environ["SLURM_NTASKS"]))
    return None


def launched_rank() -> int:
    """This process's global rank under an outside launcher; 0 without one."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return int(os.environ["RANK"])
    if SLURMEnvironment.detect():
        return int(os.environ["SLURM_PROCID"])
    return 0


def layout_value(name: str, default: int) -> int:
    """`${launcher:NAME,DEFAULT}`: `num_nodes` or `devices` (processes per node) as the
    launcher started them, else DEFAULT."""
    layout = launched_layout()
    if name not in ("num_nodes", "devices"):
        raise ValueError(f"${{launcher:{name}}}: unknown value; use num_nodes or devices")
    if layout is None:
        return default
    return layout[0] if name == "num_nodes" else layout[1]


def rank_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides for this process: none on rank 0; past it, its own job (log) name and
    no `.hydra` copy of the config, which rank 0 writes (Lightning's launcher passes the
    same to the ranks it starts)."""
    rank = launched_rank()
    if rank == 0:
        return []
    return [f"hydra.job.name={Path(argv[0]).stem}_rank{rank}", "hydra.output_subdir=null"]
