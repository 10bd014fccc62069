"""Detection benchmark: Lightning vs plain PyTorch training step, and mAP vs pycocotools.

1. Training step. The weld DetectionModule, built from the real configs
   (composed as `python -m defects.train task=weld` composes it), trains
   on one fixed batch from a freshly generated synthetic weld dataset, (a) in a plain PyTorch
   loop and (b) under `lightning.Trainer`, with the same initial weights, the same seed, the
   same optimizer and LR schedule (the module's `configure_optimizers`) and the same thread
   count. Per-step wall and CPU time after warm-up; the loss sequences are compared to show
   that both loops did the same work.
2. mAP. `make_map_metric()` (torchmetrics on faster_coco_eval, what the library reports) and
   pycocotools on the same deterministic prediction set: every COCO stat and the AP/AR@100 per
   class must agree to `--tolerance`, against pycocotools run with COCO's own thresholds and
   with the metric's thresholds. Exits with status 1 when any figure disagrees.

    .venv/bin/python benchmarks/bench_detection.py [--steps 20] [--json bench.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.utils import get_class  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from defects.data.detection import DetectionDataModule  # noqa: E402
from defects.data.synthetic import generate_weld_dataset  # noqa: E402
from defects.metrics.coco_reference import (  # noqa: E402
    map_differences,
    pycocotools_map,
    synthetic_predictions,
)
from defects.metrics.detection import make_map_metric  # noqa: E402

CONFIGS = REPO / "defects" / "configs"
Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]


# --------------------------------------------------------------------------- training step


def load_module_config(task: str = "weld") -> tuple[type, dict[str, Any]]:
    """The LightningModule class and its kwargs as `python -m defects.train task=...` builds
    them (the shared optimizer/scheduler partials instantiated)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", [f"task={task}", "logger=none"])
    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    target = kwargs.pop("_target_")
    for key in ("optimizer", "scheduler"):
        kwargs[key] = instantiate(cfg.model[key])
    kwargs["optimizer_name"] = cfg.model.optimizer._target_
    return get_class(target), kwargs


def build_module(module_cls: type, kwargs: dict[str, Any], seed: int) -> L.LightningModule:
    L.seed_everything(seed, verbose=False)
    return module_cls(**{k: v for k, v in kwargs.items() if k != "optimizer_name"})


def make_batch(
    root: Path, class_names: list[str], batch_size: int, width: int, height: int, seed: int
) -> Batch:
    """One batch of a tiny generated weld dataset, loaded the way training loads it (no augment)."""
    generate_weld_dataset(
        root,
        n_train=batch_size,
        n_valid=1,
        n_test=1,
        width=width,
        height=height,
        class_names=class_names,
        seed=seed,
    )
    data = DetectionDataModule(
        str(root), class_names, batch_size=batch_size, num_workers=0, augment=None, seed=seed
    )
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def module_optimizer(module: L.LightningModule, total_steps: int) -> tuple[Any, Any]:
    """The module's own optimizer and per-step LR scheduler, outside a Trainer.

    `configure_optimizers` only reads `trainer.estimated_stepping_batches`, which a Trainer
    fitting `total_steps` batches would report.
    """
    module.trainer = SimpleNamespace(estimated_stepping_batches=total_steps)
    try:
        config = module.configure_optimizers()
    finally:
        module.trainer = None
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def time_plain(
    module: L.LightningModule, batch: Batch, warmup: int, steps: int, seed: int
) -> dict[str, Any]:
    """A hand-written loop: forward, sum of losses, zero_grad, backward, step, LR step."""
    # The LR schedule of the Lightning run, which fits one extra step (see time_lightning).
    optimizer, scheduler = module_optimizer(module, warmup + steps + 1)
    detector = module.detector
    detector.train()
    images, targets = batch
    times, cpu_times, losses = [], [], []
    torch.manual_seed(seed)
    for step in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        losses.append(loss.item())
        if step >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu)
    return {
        "step_s": times,
        "cpu_s": cpu_times,
        "losses": losses,
        "threads": torch.get_num_threads(),
    }


class RepeatedBatch(Dataset):
    """The same pre-built batch, `length` times (use with batch_size=None)."""

    def __init__(self, batch: Batch, length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        return self.batch


def _identity(batch: Batch) -> Batch:
    return batch


class StepTimer(L.Callback):
    """Wall and process CPU time inside each training batch (start -> end hooks), and wall
    time between batch starts."""

    def __init__(self, seed: int):
        self.seed = seed
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.cpu: list[float] = []
        self.losses: list[float] = []
        self.threads = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            torch.manual_seed(self.seed)  # the plain loop seeds just before its first step too
        self.threads = torch.get_num_threads()
        self.cpu.append(time.process_time())
        self.starts.append(time.perf_counter())

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.ends.append(time.perf_counter())
        self.cpu[-1] = time.process_time() - self.cpu[-1]
        self.losses.append(float(outputs["loss"]))


def time_lightning(
    module: L.LightningModule, batch: Batch, warmup: int, steps: int, seed: int
) -> dict[str, Any]:
    """`Trainer.fit` on a loader yielding the batch; one extra step closes the last interval."""
    total = warmup + steps + 1
    loader = DataLoader(
        RepeatedBatch(batch, total),
        batch_size=None,
        collate_fn=_identity,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )
    timer = StepTimer(seed)
    fit_start = time.perf_counter()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    fit_end = time.perf_counter()
    if len(timer.starts) != total:
        raise RuntimeError(f"Lightning ran {len(timer.starts)} steps, expected {total}")
    timed = range(warmup, warmup + steps)
    return {
        "step_s": [timer.ends[i] - timer.starts[i] for i in timed],
        "cpu_s": [timer.cpu[i] for i in timed],
        "interval_s": [timer.starts[i + 1] - timer.starts[i] for i in timed],
        "setup_s": timer.starts[0] - fit_start,
        "teardown_s": fit_end - timer.ends[-1],
        "losses": timer.losses[: warmup + steps],
        "threads": timer.threads,
    }


def summarize_times(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "n": len(ms),
    }


def bench_training(args: argparse.Namespace) -> dict[str, Any]:
    """Plain and Lightning loops in alternating order (ABBA...) over `--rounds`.

    Every run starts from a fresh module built with the same seed, so all runs do the same
    work; alternating the order keeps a slow drift of the machine from favouring either loop.
    """
    module_cls, kwargs = load_module_config(args.task)
    with tempfile.TemporaryDirectory(prefix="bench_weld_") as tmp:
        batch = make_batch(
            Path(tmp) / "weld",
            kwargs["class_names"],
            args.batch_size,
            args.width,
            args.height,
            args.seed,
        )
    first = build_module(module_cls, kwargs, args.seed).state_dict()
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "lightning": []}
    for round_index in range(args.rounds):
        order = ("plain", "lightning") if round_index % 2 == 0 else ("lightning", "plain")
        for name in order:
            module = build_module(module_cls, kwargs, args.seed)
            if not all(
                torch.equal(a, b)
                for a, b in zip(first.values(), module.state_dict().values(), strict=True)
            ):
                raise RuntimeError("modules built with the same seed start from different weights")
            timer = time_plain if name == "plain" else time_lightning
            runs[name].append(timer(module, batch, args.warmup, args.steps, args.seed))

    def gather(name: str, key: str) -> list[float]:
        return [t for run in runs[name] for t in run[key]]

    loss_diff = max(
        abs(a - b) / max(abs(a), 1e-12)
        for plain, light in zip(runs["plain"], runs["lightning"], strict=True)
        for a, b in zip(plain["losses"], light["losses"], strict=True)
    )
    light_runs = runs["lightning"]
    result = {
        "arch": kwargs["net"]["arch"],
        "batch_size": args.batch_size,
        "image_size": [args.width, args.height],
        "boxes_in_batch": sum(len(t["boxes"]) for t in batch[1]),
        "optimizer": kwargs["optimizer_name"],
        "threads": {"plain": runs["plain"][0]["threads"], "lightning": light_runs[0]["threads"]},
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "plain": summarize_times(gather("plain", "step_s")),
        "lightning": summarize_times(gather("lightning", "step_s")),
        "lightning_step_to_step": summarize_times(gather("lightning", "interval_s")),
        "plain_cpu": summarize_times(gather("plain", "cpu_s")),
        "run_medians_ms": {
            name: [statistics.median(run["step_s"]) * 1000.0 for run in runs[name]]
            for name in ("plain", "lightning")
        },
        "lightning_cpu": summarize_times(gather("lightning", "cpu_s")),
        "lightning_fit_setup_ms": statistics.median(r["setup_s"] for r in light_runs) * 1000.0,
        "lightning_fit_teardown_ms": statistics.median(r["teardown_s"] for r in light_runs)
        * 1000.0,
        "loss_max_rel_diff": loss_diff,
        "final_loss": {
            "plain": runs["plain"][0]["losses"][-1],
            "lightning": light_runs[0]["losses"][-1],
        },
    }
    for key, base_key in (
        ("lightning", "plain"),
        ("lightning_step_to_step", "plain"),
        ("lightning_cpu", "plain_cpu"),
    ):
        base, other = result[base_key]["median_ms"], result[key]["median_ms"]
        result[key]["overhead_ms"] = other - base
        result[key]["overhead_pct"] = 100.0 * (other - base) / base
    return result


# --------------------------------------------------------------------------- mAP


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds over `repeats` calls, and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _as_floats(result: dict[str, Any]) -> dict[str, Any]:
    per_class = torch.atleast_1d(result["map_per_class"]).tolist()
    classes = torch.atleast_1d(result["classes"]).tolist()
    return {
        "map": float(result["map"]),
        "map_50": float(result["map_50"]),
        "map_75": float(result["map_75"]),
        "ap_per_class": dict(zip(map(str, classes), per_class, strict=True)),
    }


def bench_map(args: argparse.Namespace) -> dict[str, Any]:
    preds, targets = synthetic_predictions(args.images, args.num_classes, seed=args.seed)
    metric_thresholds = make_map_metric()

    def torchmetrics_run(class_metrics: bool = True) -> dict[str, Any]:
        metric = make_map_metric()
        metric.class_metrics = class_metrics
        metric.update(preds, targets)
        return metric.compute()

    tm_s, tm = median_time(torchmetrics_run, args.repeats)
    tm_fast_s, _ = median_time(lambda: torchmetrics_run(class_metrics=False), args.repeats)
    ref_s, ref = median_time(lambda: pycocotools_map(preds, targets), args.repeats)
    same = pycocotools_map(
        preds, targets, metric_thresholds.iou_thresholds, metric_thresholds.rec_thresholds
    )
    coco_iou = np.linspace(0.5, 0.95, 10)  # pycocotools' Params defaults
    coco_rec = np.linspace(0.0, 1.0, 101)
    thresholds_match = bool(
        np.array_equal(np.array(metric_thresholds.iou_thresholds, dtype=np.float64), coco_iou)
        and np.array_equal(np.array(metric_thresholds.rec_thresholds, dtype=np.float64), coco_rec)
    )

    rows = {
        "torchmetrics": {**_as_floats(tm), "median_ms": tm_s * 1000.0},
        "torchmetrics_no_class_metrics": {"median_ms": tm_fast_s * 1000.0},
        "pycocotools": {
            "map": ref["map"],
            "map_50": ref["map_50"],
            "map_75": ref["map_75"],
            "ap_per_class": dict(zip(map(str, ref["classes"]), ref["map_per_class"], strict=True)),
            "median_ms": ref_s * 1000.0,
        },
    }
    checks = {}
    for name, reference in (("coco_thresholds", ref), ("metric_thresholds", same)):
        diffs = map_differences(tm, reference)
        worst = max(diffs, key=diffs.get)
        checks[name] = {
            "max_abs_diff": diffs[worst],
            "worst": worst,
            "compared": len(diffs),
            "ok": diffs[worst] <= args.tolerance,
        }
    return {
        "images": args.images,
        "ground_truth_boxes": sum(len(t["boxes"]) for t in targets),
        "predictions": sum(len(p["boxes"]) for p in preds),
        "num_classes": args.num_classes,
        "repeats": args.repeats,
        "tolerance": args.tolerance,
        "rows": rows,
        "checks": checks,
        "metric_thresholds_equal_coco": thresholds_match,
        "ok": all(c["ok"] for c in checks.values()),
    }


# --------------------------------------------------------------------------- report


def print_report(report: dict[str, Any]) -> None:
    train = report.get("train")
    if train:
        width, height = train["image_size"]
        threads = train["threads"]["plain"]
        print(
            f"training step (batch {train['batch_size']}, {width}x{height}, {train['arch']}, "
            f"{train['optimizer']}, {threads} threads; {train['rounds']} rounds x "
            f"{train['steps']} timed steps per loop, {train['warmup']} warm-up each)"
        )
        if train["threads"]["lightning"] != threads:
            print(f"  WARNING: Lightning ran with {train['threads']['lightning']} threads")
        rows = (
            ("plain PyTorch", train["plain"]),
            ("Lightning", train["lightning"]),
            ("Lightning, step-to-step", train["lightning_step_to_step"]),
            ("plain PyTorch, CPU time", train["plain_cpu"]),
            ("Lightning, CPU time", train["lightning_cpu"]),
        )
        for label, row in rows:
            line = (
                f"  {label:<25} median {row['median_ms']:7.1f} ms  mean "
                f"{row['mean_ms']:7.1f} ms  min {row['min_ms']:7.1f} ms"
            )
            if "overhead_ms" in row:
                line += f"   overhead {row['overhead_pct']:+.1f} % ({row['overhead_ms']:+.1f} ms)"
            print(line)
        for name, label in (("plain", "plain PyTorch"), ("lightning", "Lightning")):
            medians = " ".join(f"{ms:.1f}" for ms in train["run_medians_ms"][name])
            print(f"  {label} median per run (ms): {medians}")
        print(
            f"  Lightning fit() setup {train['lightning_fit_setup_ms']:.0f} ms, teardown "
            f"{train['lightning_fit_teardown_ms']:.0f} ms (once per fit, not per step)"
        )
        print(
            f"  same work: loss sequences max rel diff {train['loss_max_rel_diff']:.1e} "
            f"(final loss {train['final_loss']['plain']:.4f} vs "
            f"{train['final_loss']['lightning']:.4f})"
        )
    result = report.get("map")
    if result:
        rows = result["rows"]
        print(
            f"mAP on {result['images']} images, {result['ground_truth_boxes']:,} boxes, "
            f"{result['predictions']:,} predictions, {result['num_classes']} classes "
            f"(median of {result['repeats']})"
        )
        for label, key in (
            ("torchmetrics/faster_coco_eval", "torchmetrics"),
            ("pycocotools", "pycocotools"),
        ):
            row = rows[key]
            per_class = " ".join(f"{v:.6f}" for v in row["ap_per_class"].values())
            print(
                f"  {label:<30} {row['median_ms']:7.1f} ms   mAP {row['map']:.6f}  "
                f"mAP50 {row['map_50']:.6f}  mAP75 {row['map_75']:.6f}  AP/class {per_class}"
            )
        print(
            f"  {'(torchmetrics, class_metrics off)':<30} "
            f"{rows['torchmetrics_no_class_metrics']['median_ms']:7.1f} ms"
        )
        labels = {
            "coco_thresholds": "vs pycocotools, COCO thresholds  ",
            "metric_thresholds": "vs pycocotools, metric thresholds",
        }
        for name, check in result["checks"].items():
            print(
                f"  {labels[name]} max |diff| {check['max_abs_diff']:.1e} over "
                f"{check['compared']} figures (worst {check['worst']}, tolerance "
                f"{result['tolerance']:.0e}): {'OK' if check['ok'] else 'MISMATCH'}"
            )
        if not result["metric_thresholds_equal_coco"]:
            print(
                "  note: make_map_metric's IoU/recall thresholds are torchmetrics' float32 "
                "linspace, not COCO's\n        float64 ones (e.g. 0.55 -> 0.550000011920929); "
                "that alone moves mAP when a\n        recall lands exactly on a recall point "
                "(seen: up to ~2e-3 on 20 images)"
            )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=10, help="timed training steps per loop and round"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed training steps before each timed run"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="runs of each loop, in alternating order"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch.set_num_threads for both loops",
    )
    parser.add_argument("--images", type=int, default=200, help="images in the mAP set")
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="mAP timing repeats (median)")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("train", "map"), help="run one part only")
    parser.add_argument("--task", default="weld", help="task config whose model is timed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if min(args.steps, args.rounds, args.repeats, args.images) < 1 or args.warmup < 0:
        parser.error("--steps, --rounds, --repeats and --images must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*but have no `val_dataloader`.*",
        ".*LeafSpec.*",
    ):
        warnings.filterwarnings("ignore", message)
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": args.threads,
        "seed": args.seed,
    }
    if args.only in (None, "train"):
        report["train"] = bench_training(args)
    if args.only in (None, "map"):
        report["map"] = bench_map(args)
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    ok = report.get("map", {}).get("ok", True)
    if not ok:
        print(
            "mAP MISMATCH: torchmetrics and pycocotools disagree beyond the tolerance",
            file=sys.stderr,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
