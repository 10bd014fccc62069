"""`defects predict` vs `defects score` (Ray Data) on one folder: images/s, peak memory, the
start-up cost of Ray, the 1 -> 2 actor scaling, and memory with twice the images.

    python benchmarks/bench_score.py                       # 2,000 steel strips, untrained net
    python benchmarks/bench_score.py --bundle models/steel/bundle.pt --images 4000
    python benchmarks/bench_score.py --images 20           # a smoke run

The folder is generated into a temporary directory: `--distinct` synthetic images of the
bundle's task (steel strips 1600x256, weld radiographs 384x256), copied to `--images` files
(and to 2 x `--images` for the memory check). The bundle is exported to ONNX once; every
command below gets the export folder, so no run pays for an export. Each command runs in a
process of its own, one after the other, as a user would type it:

1. `defects predict --model EXPORT --input DIR --overlays False` (its own ONNX Runtime
   threads, all cores); its time is the predict call alone (timed inside the process);
2. `defects score ... --actors 1` and `--actors 2` (`--threads-per-actor`, default 1), each
   starting its own local Ray; images/s from the summary's pipeline time (listing to the
   last part), Ray's start-up from the summary, and the command's wall time beside them;
3. `defects score ... --actors 2` on the folder of 2 x the images: memory must not grow
   with the folder (the pipeline streams; only paths are held).

Peak memory is the process tree's (the command, Ray's GCS, raylet and workers) summed PSS,
sampled every `--interval` s (benchmarks/bench_suite.py's `tree_memory`). The table is
printed and written as JSON (`--json`). Targets: score with 2 actors >= 0.9 x predict;
peak memory with 2 x the images within 1.2 x the first run's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from bench_onnx import images_for, untrained_bundle  # noqa: E402
from bench_suite import tree_memory  # noqa: E402
from PIL import Image  # noqa: E402

from defects.export import export_bundle  # noqa: E402

PREDICT = """
import sys, time
from defects.cli import predict
start = time.perf_counter()
predict(sys.argv[1], sys.argv[2], sys.argv[3], overlays=False, backend="onnx")
print("SECONDS", time.perf_counter() - start)
"""


def make_folder(folder: Path, sources: list[np.ndarray], count: int) -> Path:
    """`count` PNG files, copies of the few distinct `sources` in turn."""
    folder.mkdir(parents=True)
    encoded = []
    for k, image in enumerate(sources):
        path = folder / f"source{k}.png"
        Image.fromarray(image).save(path)
        encoded.append(path)
    for i in range(count):
        shutil.copyfile(encoded[i % len(encoded)], folder / f"img{i:07d}.png")
    for path in encoded:
        path.unlink()
    return folder


def run_measured(command: list[str], interval: float) -> dict[str, Any]:
    """Run `command`; its wall time, stdout and the peak PSS of its process tree (GiB)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_memory(root)[0])
        time.sleep(interval)
    out = child.stdout.read() if child.stdout else ""
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed with {child.returncode}:\n{out}")
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "peak_pss_gib": round(peak / 1024**3, 3), "stdout": out}


def predict_run(export: Path, images: Path, out: Path, count: int, interval: float) -> dict:
    got = run_measured(
        [sys.executable, "-c", PREDICT, str(export), str(images), str(out)], interval
    )
    seconds = float(got.pop("stdout").split("SECONDS")[-1])
    return {**got, "seconds": round(seconds, 2), "images_per_s": round(count / seconds, 2)}


def score_run(
    export: Path, images: Path, out: Path, actors: int, threads: int, interval: float
) -> dict:
    command = [
        sys.executable, "-m", "defects", "score", "--model", str(export), "--input",
        str(images), "--output", str(out), "--actors", str(actors),
        "--threads-per-actor", str(threads),
    ]  # fmt: skip
    got = run_measured(command, interval)
    got.pop("stdout")
    summary = json.loads((out / "summary.json").read_text())
    return {
        **got,
        "seconds": summary["run"]["seconds"],
        "images_per_s": summary["images_per_s"],
        "ray_startup_s": summary["run"]["ray_startup_s"],
        "images": summary["images"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a bundle (default: the task's untrained network)")
    parser.add_argument("--task", default="steel", choices=["steel", "weld"])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=16, help="distinct synthetic images")
    parser.add_argument("--threads-per-actor", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.25, help="memory sample period")
    parser.add_argument("--json", default=str(REPO / "benchmarks/results/score.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        root = Path(tmp)
        bundle = Path(args.bundle) if args.bundle else untrained_bundle(args.task, root)
        export = export_bundle(bundle, root / "onnx")
        sources = images_for(args.task, args.distinct, seed=0)
        single = make_folder(root / "images", sources, args.images)
        double = make_folder(root / "images2x", sources, 2 * args.images)
        rows = {
            "predict": predict_run(export, single, root / "p", args.images, args.interval),
            **{
                f"score, {n} actor{'s' if n > 1 else ''}": score_run(
                    export, single, root / f"s{n}", n, args.threads_per_actor, args.interval
                )
                for n in (1, 2)
            },
            "score, 2 actors, 2x images": score_run(
                export, double, root / "s2x", 2, args.threads_per_actor, args.interval
            ),
        }
    predict_rate = rows["predict"]["images_per_s"]
    one, two = rows["score, 1 actor"], rows["score, 2 actors"]
    result = {
        "task": args.task,
        "bundle": args.bundle or f"untrained {args.task}",
        "images": args.images,
        "cpus": psutil.cpu_count(),
        "threads_per_actor": args.threads_per_actor,
        "runs": rows,
        "score_2_actors_over_predict": round(two["images_per_s"] / predict_rate, 3),
        "scaling_1_to_2_actors": round(two["images_per_s"] / one["images_per_s"], 3),
        "memory_2x_images_over_1x": round(
            rows["score, 2 actors, 2x images"]["peak_pss_gib"] / two["peak_pss_gib"], 3
        ),
    }
    print(
        f"\n{args.images} {args.task} images, {result['cpus']} CPUs\n"
        "| run | images/s | pipeline s | wall s | Ray start-up s | peak PSS GiB |\n"
        "|---|---|---|---|---|---|"
    )
    for name, row in rows.items():
        print(
            f"| {name} | {row['images_per_s']} | {row['seconds']} | {row['wall_s']} "
            f"| {row.get('ray_startup_s', '-')} | {row['peak_pss_gib']} |"
        )
    print(
        f"score (2 actors) / predict: {result['score_2_actors_over_predict']} (target >= 0.9); "
        f"1 -> 2 actors: x{result['scaling_1_to_2_actors']}; "
        f"memory 2x images / 1x: {result['memory_2x_images_over_1x']} (target <= 1.2)"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
