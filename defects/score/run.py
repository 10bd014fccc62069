"""`defects score`: one Ray Data pipeline from an image archive to Parquet parts.

list (tasks, per folder) -> drop what is written -> blocks of `part_size` paths -> read and
decode (tasks) -> predictor (a pool of actors) -> one Parquet part per block (tasks). Every
step runs wherever Ray has room, on one machine or a cluster; the driver lists one folder
level, reads the paths already written, and counts the summary at the end.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from defects.score import cluster
from defects.score.model import ModelPackage, package_model
from defects.score.storage import Location, is_dir, location

log = logging.getLogger("defects")

#: images per Parquet part, per decoding task and per actor task: small enough that a flat
#: folder spreads over the actors and the last blocks do not leave them idle
PART_SIZE = 256


def check_apart(source: Location, out: Location) -> None:
    """An output inside the input would be listed as input: its overlays scored next time."""
    if source.scheme != out.scheme:
        return
    if out.root == source.root or out.root.startswith(source.root.rstrip("/") + "/"):
        raise ValueError(f"--output: {out} lies inside --input {source}; put it elsewhere")


def score(
    model: str,
    input: str,
    output: str,
    actors: int | None = None,
    threads_per_actor: int | None = None,
    batch_size: int = 4,
    part_size: int = PART_SIZE,
    overlays: bool = False,
    address: str | None = None,
    backend: str = "onnx",
    gpus_per_actor: float = 0.0,
) -> dict[str, Any]:
    """Score every image under `input` not yet in `output`; return the output's summary."""
    from defects.score.parts import RECORDS, check_model, clear_temp, done_paths
    from defects.score.summary import summarize, write_summary

    for flag, value in (("--batch-size", batch_size), ("--part-size", part_size)):
        if int(value) < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if gpus_per_actor and backend != "eager":
        raise ValueError("--gpus-per-actor needs --backend eager (ONNX Runtime runs on the CPU)")
    source, out = location(input, "--input"), location(output, "--output")
    if not is_dir(source):
        raise FileNotFoundError(f"--input: {input} is not a folder")
    check_apart(source, out)
    package = package_model(model, backend)
    records = out.child(RECORDS)
    check_model(records, package.name, package.version)
    if clear_temp(records):
        log.info("removed the half-written parts of an interrupted run")
    done = done_paths(records)
    startup = cluster.connect(address)
    cpus, gpus = cluster.cluster_resources()
    pool = cluster.size_pool(cpus, actors, threads_per_actor, float(gpus_per_actor), gpus)
    log.info(
        "scoring %s with %s %s (%d actors x %d threads); %d images already written",
        source, package.name, package.version, pool.actors, pool.threads, len(done),
    )  # fmt: skip
    start = time.perf_counter()
    scored = run_pipeline(
        source, out, package, pool, done, int(batch_size), int(part_size), bool(overlays)
    )
    run = {
        "images": scored,
        "seconds": round(time.perf_counter() - start, 3),
        "ray_startup_s": round(startup, 3),
        "actors": pool.actors,
        "threads_per_actor": pool.threads,
    }
    summary = summarize(out, records, package, run)
    summary["summary"] = write_summary(out, summary)
    return summary


def run_pipeline(
    source: Location,
    out: Location,
    package: ModelPackage,
    pool: cluster.Pool,
    done: Any,
    batch_size: int,
    part_size: int,
    overlays: bool,
) -> int:
    """Build and run the Ray Data pipeline; returns the rows written."""
    import ray

    from defects.score.parts import RECORDS, PartSink
    from defects.score.reading import list_unit, listing_units, read_and_decode
    from defects.score.scorer import OVERLAYS, Scorer

    units = listing_units(source)
    # Ray's UDF type is a one-argument callable; the rest comes through fn_kwargs, which Ray
    # stores once in its object store (the paths already done may be many).
    listing: Any = list_unit
    decoding: Any = read_and_decode
    dataset = (
        ray.data.from_items(units, override_num_blocks=len(units))
        .map_batches(
            listing,
            batch_size=1,
            fn_kwargs={"source": source, "done": done},
            num_cpus=cluster.TASK_CPUS,
        )
        .repartition(target_num_rows_per_block=part_size)
        .map_batches(
            decoding,
            batch_size=None,
            fn_kwargs={"source": source, "channels": package.channels},
            num_cpus=cluster.TASK_CPUS,
        )
        .map_batches(
            Scorer,
            batch_size=batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={
                "package": ray.put(package),
                "threads": pool.threads,
                "source": source,
                "overlays": out.child(OVERLAYS) if overlays else None,
                "device": "cuda" if pool.gpus else "cpu",
            },
            compute=ray.data.ActorPoolStrategy(size=pool.actors),
            num_cpus=pool.actor_cpus,
            num_gpus=pool.gpus or None,
        )
    )
    sink = PartSink(out.child(RECORDS), part_size)
    dataset.write_datasink(sink, ray_remote_args={"num_cpus": cluster.TASK_CPUS})
    return sink.written
