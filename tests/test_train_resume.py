"""Kill and resume: a training run killed with SIGKILL ends, once resumed with
`ckpt_path=last`, with the model an uninterrupted run of the same seed trains.

The runs are subprocesses (`python -m defects.train`), as a user's or a scheduler's would
be. The killed run stops in the middle of its third epoch: a test callback (`Pause`) waits
there until the test sends SIGKILL, so the kill lands at a known point after the checkpoint
of the second epoch was written, with the third epoch's loader already drawing. Equal means
equal: the last epoch's weights and optimizer state bit for bit, every epoch's logged
metrics, the best model's bundle and its report. The checkpoint holds the weights,
optimizer, scheduler and loop state (Lightning's part) and every random stream, the train
loader's included (defects.checkpoints.ResumeState), and the runs use one thread each, so
nothing in the resumed epoch can differ. (The best model here is an early epoch: its bundle
alone would not show the resumed epoch.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from mlflow.tracking import MlflowClient

from defects.bundle import load_bundle
from defects.checkpoints import RESUMED_BY, RESUMED_FROM, AtomicCheckpointIO, LatestCheckpoint
from defects.data.synthetic import generate_weld_dataset
from tests.conftest import TINY_WELD, weld_overrides

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
KILLED_IN = 2  # the epoch the run is killed in: last.ckpt then holds epoch 1


class Pause(L.Callback):
    """At the first batch of epoch `epoch`, write `marker` and wait to be killed."""

    def __init__(self, epoch: int, marker: str):
        self.epoch, self.marker = epoch, Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.current_epoch == self.epoch:
            self.marker.write_text(str(os.getpid()))
            time.sleep(600)


def run_env() -> dict[str, str]:
    """One thread per run: the same float sums in every run (and fair on 2 shared cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def train_command(data: Path, out: Path, store: str, *extra: str) -> list[str]:
    overrides = [o for o in weld_overrides(data, out) if not o.startswith("logger=")]
    return [
        *(sys.executable, "-m", "defects.train", *overrides),
        *("logger=mlflow", f"logger.tracking_uri={store}"),
        f"logger.artifact_location={out / 'mlartifacts'}",
        f"trainer.max_epochs={EPOCHS}",
        f"hydra.run.dir={out / 'hydra'}",
        *extra,
    ]


def start(command: list[str], log: Path) -> subprocess.Popen:
    """A run in the background, its output in `log` (one thread: two runs share the 2
    cores of CI)."""
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=REPO, env=run_env(), stdout=out, stderr=out)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text(errors="replace")[-6000:]


def train_until_killed(command: list[str], marker: Path, log: Path, timeout: float = 600) -> None:
    """Start the run, wait for `Pause` to say where it is, then SIGKILL it."""
    proc = start(command, log)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                text = log.read_text(errors="replace")[-6000:]
                pytest.fail(f"the run ended before it was killed:\n{text}")
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def runs(store: str) -> list:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("defects-weld")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])


def metrics_by_epoch(path: Path) -> list[dict]:
    """history.json less what differs between runs by design (the run, the wall clock)."""
    drop = ("run_id", "elapsed_s")
    return [{k: v for k, v in r.items() if k not in drop} for r in json.loads(path.read_text())]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("resume")
    data = tmp / "data"
    generate_weld_dataset(data, **TINY_WELD)
    whole, broken = tmp / "whole", tmp / "broken"
    whole_log = tmp / "whole.log"
    uninterrupted = start(train_command(data, whole, f"sqlite:///{tmp / 'whole.db'}"), whole_log)

    store = f"sqlite:///{tmp / 'broken.db'}"
    marker = tmp / "paused"
    pause = [
        f"+callbacks.pause._target_={__name__}.Pause",
        f"+callbacks.pause.epoch={KILLED_IN}",
        f"+callbacks.pause.marker={marker}",
    ]
    train_until_killed(train_command(data, broken, store, *pause), marker, tmp / "killed.log")
    last = broken / "model_dir" / "checkpoints" / "last.ckpt"
    killed = {
        "checkpoint": torch.load(last, map_location="cpu", weights_only=True),
        "files": sorted(p.name for p in broken.rglob("*") if p.is_file()),
        "runs": runs(store),
    }
    finish(uninterrupted, whole_log)
    resumed = tmp / "resumed.log"
    finish(start(train_command(data, broken, store, "ckpt_path=last"), resumed), resumed)
    return {"whole": whole, "broken": broken, "killed": killed, "store": store}


def test_the_kill_left_the_last_epoch_checkpoint_and_no_half_file(killed_and_resumed) -> None:
    killed = killed_and_resumed["killed"]
    assert killed["checkpoint"]["epoch"] == KILLED_IN - 1  # the epoch before the kill
    assert {"optimizer_states", "lr_schedulers", "loops", "state_dict"} <= set(killed["checkpoint"])
    resume = [v for k, v in killed["checkpoint"]["callbacks"].items() if "ResumeState" in k]
    assert resume and len(resume[0]["rng"]) == 1 and resume[0]["mlflow_run_id"]
    # The best checkpoint, last.ckpt and the epoch records; no bundle or report yet, and no
    # temp file (atomic writers: a temp name is hidden, with ".tmp-" in it).
    assert "bundle.pt" not in killed["files"] and "train.json" not in killed["files"]
    assert not [name for name in killed["files"] if ".tmp-" in name], killed["files"]
    assert [r.info.status for r in killed["runs"]] == ["RUNNING"]  # SIGKILL: no one said


def assert_same_tensors(got: Any, expected: Any, where: str) -> None:
    """Nested dicts/lists of tensors and plain values, equal bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for key, value in expected.items():
            assert_same_tensors(got[key], value, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for k, value in enumerate(expected):
            assert_same_tensors(got[k], value, f"{where}[{k}]")
    else:
        assert got == expected, where


def test_resumed_run_trains_the_uninterrupted_model(killed_and_resumed) -> None:
    """The last epoch's weights and optimizer state (last.ckpt), each epoch's logged
    metrics, the best model's bundle and its report: all equal to the unbroken run's."""
    whole, broken = killed_and_resumed["whole"], killed_and_resumed["broken"]
    last, expected_last = (
        torch.load(p / "model_dir" / "checkpoints" / "last.ckpt", weights_only=True)
        for p in (broken, whole)
    )
    assert last["epoch"] == expected_last["epoch"] == EPOCHS - 1
    assert last["global_step"] == expected_last["global_step"]
    assert_same_tensors(last["state_dict"], expected_last["state_dict"], "state_dict")
    assert_same_tensors(
        last["optimizer_states"], expected_last["optimizer_states"], "optimizer_states"
    )
    assert last["lr_schedulers"] == expected_last["lr_schedulers"]
    history, expected_history = (
        metrics_by_epoch(p / "metrics_dir" / "history.json") for p in (broken, whole)
    )
    assert [r["epoch"] for r in history] == list(range(EPOCHS))
    assert history == expected_history

    resumed, uninterrupted = (load_bundle(p / "model_dir" / "bundle.pt") for p in (broken, whole))
    assert_same_tensors(resumed["state_dict"], uninterrupted["state_dict"], "bundle")
    assert resumed["thresholds"] == uninterrupted["thresholds"]
    assert resumed["metrics"] == uninterrupted["metrics"]
    report, expected = (p / "metrics_dir" / "train.json" for p in (broken, whole))
    assert report.read_text() == expected.read_text()


def test_killed_mlflow_run_is_marked_killed_and_linked(killed_and_resumed) -> None:
    killed_id = killed_and_resumed["killed"]["runs"][0].info.run_id
    first, second = runs(killed_and_resumed["store"])
    assert first.info.run_id == killed_id
    assert first.info.status == "KILLED"
    assert second.info.status == "FINISHED"
    assert second.data.tags[RESUMED_FROM] == killed_id
    assert first.data.tags[RESUMED_BY] == second.info.run_id
    assert "best/val/mAP" in second.data.metrics


def test_atomic_checkpoint_io_killed_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A writer killed at a random point (here: while it rewrites a 40 MB checkpoint over
    and over) leaves the last complete checkpoint, never part of one."""
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": -1, "w": torch.zeros(10)}, path)
    writer = (
        "import sys, torch\n"
        "from defects.checkpoints import AtomicCheckpointIO\n"
        "io, step = AtomicCheckpointIO(), 0\n"
        "while True:\n"
        "    io.save_checkpoint({'step': step, 'w': torch.full((10**7,), step)}, sys.argv[1])\n"
        "    step += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while torch.load(path, weights_only=True)["step"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait()
    state = torch.load(path, weights_only=True)
    assert state["step"] >= 1 and bool((state["w"] == state["step"]).all())


class LastProbe(L.Callback):
    """The global step last.ckpt holds at the start of every training batch, written to
    `<path>.json` when training ends."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.seen: list[int | None] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        found = self.path.exists()
        step = torch.load(self.path, weights_only=True)["global_step"] if found else None
        self.seen.append(step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path(f"{self.path}.json").write_text(json.dumps(self.seen))


def test_every_n_steps_saves_last_inside_the_epoch(weld_cfg, tmp_path: Path, one_thread) -> None:
    """`callbacks.last_checkpoint.every_n_steps=1`: last.ckpt after each step inside an
    epoch; the epoch's own last step is saved at the epoch's end, after validation."""
    from defects.train import train

    last = tmp_path / "model_dir" / "checkpoints" / "last.ckpt"
    train(
        weld_cfg(
            "callbacks.last_checkpoint.every_n_steps=1",
            "trainer.max_epochs=1",
            f"+callbacks.probe._target_={__name__}.LastProbe",
            f"+callbacks.probe.path={last}",
        )
    )
    assert json.loads(Path(f"{last}.json").read_text()) == [None, 1]  # debug=tiny: 2 steps
    assert torch.load(last, weights_only=True)["global_step"] == 2
    with pytest.raises(ValueError, match="callbacks.last_checkpoint.every_n_steps"):
        LatestCheckpoint(str(tmp_path), every_n_steps=0)
