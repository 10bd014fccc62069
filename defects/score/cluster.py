"""Ray for `defects score`: a local instance sized to this machine, or the cluster that
`--address` / RAY_ADDRESS names, and the actor pool fitted to the cluster's CPUs.

Local Ray starts quietly: no dashboard, no usage statistics, warnings only. The same code
runs on a cluster unchanged; only where Ray runs differs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

log = logging.getLogger("defects")

# Set where the user has not: no usage report leaves the machine; on a busy machine the
# raylet waits longer than Ray's 30 s default for its agents before giving up; the workers
# of a local Ray run at the priority of the command that started it (Ray's default, nice
# 15, gives the scoring actors a fraction of a core beside any other process; measured:
# 0.67 x `defects predict`'s images/s on a 2-core machine with idle-priority jobs beside).
# A cluster's own raylets keep their settings: these are read when Ray starts here.
QUIET_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_agent_register_timeout_ms": "120000",
    "RAY_worker_niceness": "0",
}
#: logical CPUs a listing, decoding or writing task reserves: short tasks, several per core
TASK_CPUS = 0.25
#: the share of the cluster's CPUs kept free of actors, for reading, decoding and writing,
#: and at least one whole CPU: Ray Data's repartition tasks take one, and with less left
#: beside the actors the pipeline stalls (seen with 2 actors on 2 CPUs)
READ_SHARE = 0.125
MIN_FREE_CPUS = 1.0


def connect(address: str | None = None, num_cpus: int | None = None) -> float:
    """Join the cluster at `address` (else RAY_ADDRESS), else start a local Ray with
    `num_cpus` (default: this machine's cores); returns the seconds it took (0 when this
    process is connected already)."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import ray

    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its own INFO lines per dataset
    # Its high-memory detector repeats every 30 s that an actor holds the model's working
    # memory (GiBs for a 1600x256 segmenter): expected, and the docs give the figure.
    context.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    return time.perf_counter() - start


def cluster_resources() -> tuple[float, float]:
    """(CPUs, GPUs) of the whole cluster, as Ray counts them."""
    import ray

    resources = ray.cluster_resources()
    return float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0))


@dataclass(frozen=True)
class Pool:
    """How the scoring actors use the cluster: `actor_cpus` is what Ray reserves for each
    (logical CPUs), `threads` what its ONNX Runtime session runs on."""

    actors: int
    threads: int
    actor_cpus: float
    gpus: float = 0.0


def size_pool(
    cpus: float,
    actors: int | None = None,
    threads: int | None = None,
    gpus: float = 0.0,
    cluster_gpus: float = 0.0,
) -> Pool:
    """Actors x threads fill the CPUs less READ_SHARE (at least MIN_FREE_CPUS), so reading
    and decoding always find a slot; with `gpus` per actor, as many actors as the cluster's
    GPUs hold. Given actors and threads that do not fit are reserved their share of what is
    left, with a warning: the cores are then oversubscribed."""
    if actors is not None and int(actors) < 1:
        raise ValueError(f"--actors must be at least 1, got {actors}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"--threads-per-actor must be at least 1, got {threads}")
    if gpus < 0:
        raise ValueError(f"--gpus-per-actor must not be negative, got {gpus}")
    usable = cpus - max(MIN_FREE_CPUS, READ_SHARE * cpus)
    if usable <= 0:
        raise ValueError(f"the Ray cluster has {cpus:g} CPUs: too few to score on")
    threads = int(threads or 1)
    if gpus and not actors:
        actors = int(cluster_gpus // gpus)
        if actors < 1:
            raise ValueError(
                f"--gpus-per-actor {gpus:g}: the Ray cluster has {cluster_gpus:g} GPUs"
            )
    actors = int(actors or max(1, int(usable // threads)))
    if actors * threads > cpus:
        log.warning(
            "%d actors x %d threads oversubscribe the cluster's %g CPUs", actors, threads, cpus
        )
    return Pool(actors, threads, min(float(threads), usable / actors), float(gpus))
