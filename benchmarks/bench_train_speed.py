"""Training speed of every kind, and of Ultralytics' trainer beside ours, per CPU core.

    python benchmarks/bench_train_speed.py                         # every kind, 1 and 2 cores
    python benchmarks/bench_train_speed.py --kinds yolo --cores 2  # one kind, one core count
    python benchmarks/bench_train_speed.py --synthetic             # the tasks' built-in data

Each kind trains on its real-data experiment when its data is prepared (`python -m
defects.prepare experiment=...`, from ../shared/data), else on its task's built-in data:

| kind | experiment | task |
|---|---|---|
| yolo | winding_neu_det | winding |
| fasterrcnn | weld_neu_det | weld |
| gated | steel_magnetic_tile | steel |

Every figure comes from a worker process of its own pinned to the first N cores
(`os.sched_setaffinity`, inherited by its data-loader workers), torch at N threads, so "1 core"
is one core for everything the run does, loader workers included, on both sides. Per kind:

- data: images/s of the train split's `__getitem__` (decode + augmentation) in one process,
  second pass over the same items (a cache, where there is one, is warm then);
- step: images/s of training steps on batches made beforehand (forward, loss, backward,
  optimizer, EMA, logging) through Lightning, the first batch left out;
- epoch: one whole epoch of the configured trainer and loaders (`trainer.max_epochs=1`):
  wall seconds of its training part and of its validation (with the metric), and train
  images/s over the training part and over the whole epoch;
- Ultralytics (yolo only, `--no-ultralytics` to skip): its own trainer, one epoch on the same
  folder at the same image size and batch, `workers=0`, the same core pinning; times from its
  epoch callbacks.
Figures per core divide by N. Numbers printed side by side in one table, and saved as JSON
(`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
for key, value in {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}.items():
    os.environ.setdefault(key, value)

KINDS = {
    "yolo": ("winding_neu_det", "winding"),
    "fasterrcnn": ("weld_neu_det", "weld"),
    "gated": ("steel_magnetic_tile", "steel"),
}


def overrides_for(kind: str, synthetic: bool, out: Path, extra: list[str]) -> list[str]:
    """The config of one kind's run: its real-data experiment when that data is prepared."""
    experiment, task = KINDS[kind]
    base = [
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"paths.model_dir={out / 'models'}",
        f"paths.metrics_dir={out / 'metrics'}",
        f"paths.plots_dir={out / 'plots'}",
    ]
    if not synthetic:
        cfg = compose([f"experiment={experiment}"])
        if (Path(cfg.paths.data_dir) / "train").is_dir():
            return [f"experiment={experiment}", *base, *extra]
        print(f"{kind}: {cfg.paths.data_dir} not prepared; the task's built-in data instead")
    return [f"task={task}", *base, *extra]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "defects" / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


class EpochClock:
    """Wall time of the training part and the validation part of each epoch."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.valid: list[float] = []
        self._start = 0.0

    def callback(self) -> Any:
        import lightning as L

        clock = self

        class _Clock(L.Callback):
            def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
                clock._start = time.perf_counter()

            def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
                clock.train.append(time.perf_counter() - clock._start)

            def on_validation_epoch_start(self, trainer: Any, module: Any) -> None:
                clock._valid = time.perf_counter()

            def on_validation_epoch_end(self, trainer: Any, module: Any) -> None:
                if not trainer.sanity_checking:
                    clock.valid.append(time.perf_counter() - clock._valid)

        return _Clock()


class StepClock:
    """Wall time of every training batch after the first."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def callback(self) -> Any:
        import lightning as L

        clock = self

        class _Clock(L.Callback):
            def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
                clock._start = time.perf_counter()

            def on_train_batch_end(self, *args: Any) -> None:
                clock.times.append(time.perf_counter() - clock._start)

        return _Clock()


def without_checkpoints(callbacks: list[Any]) -> list[Any]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    return [c for c in callbacks if not isinstance(c, ModelCheckpoint)]


def batch_size(batch: Any) -> int:
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(images)


def measure_ours(overrides: list[str], batches: int, epoch: bool) -> dict[str, float]:
    """Data, step and epoch figures of our trainer for one composed config."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from defects.runtime import make_callbacks, offline_environment

    offline_environment()
    cfg = compose(overrides)
    L.seed_everything(int(cfg.seed), workers=True)
    result: dict[str, float] = {}

    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    dataset = loader.dataset
    items = min(len(dataset), batches * int(cfg.data.batch_size))
    for _ in range(2):  # the second pass is what every epoch after the first costs
        start = time.perf_counter()
        for i in range(items):
            dataset[i]
        elapsed = time.perf_counter() - start
    result["data_img_s"] = items / elapsed

    made = []
    for batch in loader:
        made.append(batch)
        if len(made) == batches + 1:
            break
    module = instantiate(cfg.model, _convert_="all")
    clock = StepClock()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        # The run's own callbacks (channels-last, close-mosaic, ...), not its checkpointing.
        callbacks=[*without_checkpoints(make_callbacks(cfg)), clock.callback()],
    )
    trainer.fit(
        module,
        train_dataloaders=torch.utils.data.DataLoader(made, batch_size=None, collate_fn=None),
    )
    sizes = [batch_size(b) for b in made[1:]]
    result["step_img_s"] = sum(sizes) / sum(clock.times[1:])

    if epoch:
        module = instantiate(cfg.model, _convert_="all")
        epochs = EpochClock()
        trainer = instantiate(
            cfg.trainer,
            max_epochs=1,
            max_time=None,
            num_sanity_val_steps=0,
            logger=False,
            callbacks=[*make_callbacks(cfg), epochs.callback()],
        )
        trainer.fit(module, datamodule=datamodule)
        train_images = len(datamodule.train_dataloader().dataset)
        result.update(
            epoch_train_s=epochs.train[0],
            epoch_valid_s=epochs.valid[0] if epochs.valid else 0.0,
            epoch_img_s=train_images / (epochs.train[0] + (epochs.valid or [0.0])[0]),
            epoch_train_img_s=train_images / epochs.train[0],
            train_images=float(train_images),
        )
    return result


def measure_ultralytics(overrides: list[str], out: Path, threads: int) -> dict[str, float]:
    """One epoch of Ultralytics' own trainer on our folder, at our image size and batch.

    Its trainer runs torch on one thread whatever the process may use (measured: the same
    epoch time pinned to 1 and to 2 cores); at the epoch start torch gets `threads` back,
    so "2 cores" is two threads for both trainers."""
    import torch
    import yaml

    from defects.kinds.yolo import adapter

    cfg = compose(overrides)
    data = Path(cfg.paths.data_dir).resolve()
    spec = {
        "path": str(data),
        "train": "train/images",
        "val": "valid/images",
        "names": dict(enumerate(cfg.class_names)),
    }
    data_yaml = out / "ultralytics_data.yaml"
    data_yaml.write_text(yaml.safe_dump(spec))
    marks: dict[str, float] = {}

    def mark(name: str) -> Any:
        return lambda trainer: marks.setdefault(name, time.perf_counter())

    def start(trainer: Any) -> None:
        marks["threads_before"] = float(torch.get_num_threads())
        torch.set_num_threads(threads)
        marks.setdefault("start", time.perf_counter())

    adapter.train_reference(
        str(data_yaml),
        cfg.model.model_yaml,
        project=str(out.resolve()),
        name="run",
        exist_ok=True,
        callbacks={
            "on_train_epoch_start": start,
            "on_train_epoch_end": mark("train_end"),
            "on_fit_epoch_end": mark("end"),
        },
        epochs=1,
        imgsz=int(cfg.model.imgsz),
        batch=int(cfg.data.batch_size),
        device="cpu",
        workers=0,
        amp=False,
        plots=False,
        verbose=False,
        val=True,
    )
    train_images = len(list((data / "train" / "images").iterdir()))
    train_s, valid_s = marks["train_end"] - marks["start"], marks["end"] - marks["train_end"]
    return {
        "their_threads": marks["threads_before"],
        "epoch_train_s": train_s,
        "epoch_valid_s": valid_s,
        "epoch_img_s": train_images / (train_s + valid_s),
        "epoch_train_img_s": train_images / train_s,
        "train_images": float(train_images),
    }


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process, pinned to the first `--cores` cores."""
    os.sched_setaffinity(0, set(range(args.cores)))
    import torch

    torch.set_num_threads(args.cores)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        overrides = overrides_for(args.kind, args.synthetic, out, args.override)
        if args.side == "ultralytics":
            result = measure_ultralytics(overrides, out, args.cores)
        else:
            result = measure_ours(overrides, args.batches, not args.no_epoch)
    result["threads_seen"] = float(torch.get_num_threads())
    print("RESULT " + json.dumps(result))


def run_worker(kind: str, side: str, cores: int, args: argparse.Namespace) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--kind",
        kind,
        "--side",
        side,
        "--cores",
        str(cores),
        "--batches",
        str(args.batches),
    ]
    command += ["--synthetic"] * args.synthetic + ["--no-epoch"] * args.no_epoch
    command += [f"--override={value}" for value in args.override]
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "MPLBACKEND": "Agg"}
    print(f"-- {kind} / {side} / {cores} core(s)", flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise SystemExit(f"{kind} / {side} / {cores} core(s) failed (rc {done.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


COLUMNS = (
    ("data_img_s", "data img/s (1 process)"),
    ("step_img_s", "step img/s/core"),
    ("epoch_train_s", "epoch train s"),
    ("epoch_valid_s", "epoch valid s"),
    ("epoch_train_img_s", "epoch train img/s/core"),
    ("epoch_img_s", "epoch img/s/core (with valid)"),
)
PER_CORE = {"step_img_s", "epoch_train_img_s", "epoch_img_s"}


def table(rows: list[dict[str, Any]]) -> str:
    head = "| kind | trainer | cores | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for row in rows:
        cells = []
        for key, _ in COLUMNS:
            value = row["figures"].get(key)
            if value is None:
                cells.append("")
            else:
                cells.append(f"{value / row['cores'] if key in PER_CORE else value:.1f}")
        lines.append(
            f"| {row['kind']} | {row['side']} | {row['cores']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--cores", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batches", type=int, default=10, help="batches for data/step figures")
    parser.add_argument("--synthetic", action="store_true", help="the tasks' built-in data")
    parser.add_argument("--no-epoch", action="store_true", help="skip the whole-epoch figures")
    parser.add_argument("--no-ultralytics", action="store_true")
    parser.add_argument(
        "--override", action="append", default=[], help="a config override for our side"
    )
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.cores = args.cores[0]
        worker(args)
        return
    available = len(os.sched_getaffinity(0))
    if max(args.cores) > available:
        raise SystemExit(f"--cores {max(args.cores)}: this process may use {available} cores")
    rows = []
    for kind in args.kinds:
        sides = ["ours"] + (["ultralytics"] if kind == "yolo" and not args.no_ultralytics else [])
        for cores in args.cores:
            for side in sides:
                figures = run_worker(kind, side, cores, args)
                rows.append({"kind": kind, "side": side, "cores": cores, "figures": figures})
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
