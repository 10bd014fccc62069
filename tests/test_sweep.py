"""A Hydra multirun sweep over the learning rate on tiny data: both jobs train, each writes
its own outputs, each returns (and logs) its monitored metric, and the runs differ.

On tiny weld data a from-scratch detector scores mAP 0 in both jobs, so there the runs are
told apart by their learning rates, losses and weights, and each job's numbers are checked
against its own files: the returned score is its history's best, its best checkpoint is that
epoch's, its bundle holds that checkpoint's weights, its train.json the bundle's metrics.
The (slow) steel sweep returns two different non-zero Dice scores, the numbers a sweeper
would rank.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from defects.bundle import load_bundle
from defects.data.synthetic import generate_steel_dataset, generate_weld_dataset
from tests.conftest import (
    TINY_STEEL,
    TINY_WELD,
    report_metrics,
    steel_overrides,
    weld_overrides,
)
from tests.test_train_distributed import run_train

LRS = ("0.0001", "0.01")
# task: (dataset generator and its tiny settings, overrides, monitor, train.json's per-class
# groups, the LightningModule attribute whose state_dict the bundle holds)
TASKS = {
    "weld": (
        generate_weld_dataset,
        TINY_WELD,
        weld_overrides,
        "val/mAP",
        {
            "AP": "AP",
            "AP50": "AP50",
            "precision_per_class": "precision",
            "recall_per_class": "recall",
        },
        "detector.",
    ),
    "steel": (
        generate_steel_dataset,
        TINY_STEEL,
        steel_overrides,
        "val/seg_dice_defective",
        {"dice_per_class": "dice", "iou_per_class": "iou"},
        "net.",
    ),
}
# train.py's closing line: "best checkpoint PATH (MONITOR SCORE); bundle PATH"
FINISHED = re.compile(r"best checkpoint (\S+) \((\S+) (\S+)\); bundle (\S+)")


@pytest.mark.parametrize("task", ["weld", pytest.param("steel", marks=pytest.mark.slow)])
def test_multirun_over_lr_compares_real_numbers(tmp_path: Path, task: str) -> None:
    generate, tiny, task_overrides, monitor, nest, prefix = TASKS[task]
    data, sweep = tmp_path / "data", tmp_path / "sweep"
    generate(data, **tiny)
    # Every output under the job's own Hydra dir (sweep/<job number>): given on the command
    # line only, so committed configs keep their plain paths.
    overrides = [o for o in task_overrides(data, tmp_path / "unused") if not o.startswith("paths.")]
    job_paths = [
        f"paths.{key}=${{hydra:runtime.output_dir}}/{key}"
        for key in ("model_dir", "metrics_dir", "plots_dir")
    ]
    proc = run_train(
        [
            "-m",
            f"optimizer.lr={','.join(LRS)}",
            *overrides,
            f"paths.data_dir={data}",
            *job_paths,
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert (sweep / "multirun.yaml").exists()
    assert not (tmp_path / "unused").exists()

    jobs = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        overrides_run = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lr = next(o.split("=", 1)[1] for o in overrides_run if o.startswith("optimizer.lr="))
        # What main returned to Hydra: the best checkpoint's monitored score, logged by train.
        (finished,) = FINISHED.findall((job / "train.log").read_text())
        ckpt, logged_monitor, returned, bundle = finished
        history = json.loads((job / "metrics_dir" / "history.json").read_text())
        jobs[lr] = {
            "dir": job,
            "monitor": logged_monitor,
            "returned": float(returned),
            "ckpt": Path(ckpt),
            "bundle_path": Path(bundle),
            "history": history,
            "bundle": load_bundle(job / "model_dir" / "bundle.pt"),
        }
    assert sorted(jobs) == sorted(LRS)

    for lr, job in jobs.items():
        # Each job wrote into its own folder, with the rate it was given.
        model_dir = job["dir"] / "model_dir"
        assert job["bundle_path"] == model_dir / "bundle.pt", lr
        assert job["ckpt"].parent == model_dir / "checkpoints", lr
        ckpt = torch.load(job["ckpt"], map_location="cpu", weights_only=True)
        for group in ckpt["optimizer_states"][0]["param_groups"]:
            assert group["initial_lr"] == float(lr), lr
        # The returned score is the best epoch's (ModelCheckpoint: mode max, first of ties),
        # and the best checkpoint is that epoch's.
        scores = [r[monitor] for r in job["history"]]
        assert job["monitor"] == monitor and math.isfinite(job["returned"]), lr
        assert math.isclose(job["returned"], max(scores), abs_tol=5e-5), lr  # logged as %.4f
        assert job["ckpt"].name == f"epoch{scores.index(max(scores)):03d}.ckpt", lr
        # The bundle holds the best checkpoint's weights (not the last epoch's) ...
        weights = job["bundle"]["state_dict"]
        assert set(ckpt["state_dict"]) >= {prefix + k for k in weights}, lr
        for k, v in weights.items():
            assert torch.equal(v, ckpt["state_dict"][prefix + k]), (lr, k)
        # ... and train.json the metrics stored with it, every key, rounded as written.
        written = report_metrics(
            job["dir"] / "metrics_dir" / "train.json", "val", nest, ["thresholds"]
        )
        stored = job["bundle"]["metrics"]
        assert written == {k: round(v, 6) for k, v in stored.items()}, lr
        assert all(0.0 <= v <= 1.0 for v in stored.values()), (lr, stored)

    low, high = jobs[LRS[0]], jobs[LRS[1]]
    # The override reached the optimizer: the same schedule step, 100x the rate (history
    # rounds to 6 decimals, hence the tolerance).
    for a, b in zip(low["history"], high["history"], strict=True):
        assert math.isclose(b["train/lr"], 100 * a["train/lr"], rel_tol=0.05)
    # Same data, seed and initialisation: only the rate differs, and so do the results.
    assert low["history"][-1]["train/loss"] != high["history"][-1]["train/loss"]
    weights = [job["bundle"]["state_dict"] for job in (low, high)]
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    if task == "steel":  # seeded CPU runs: 0.0923 and 0.0698 when written
        assert low["returned"] != high["returned"] and low["returned"] > 0
