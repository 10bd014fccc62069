"""`trainer=ddp_cpu`: two CPU processes (gloo) run the real entry point end to end.

`python -m defects.train` runs as a subprocess, as a user would: Lightning's launcher re-runs
the command for rank 1 (Hydra-aware: same run dir, its own job name). Checked: one bundle,
report and set of plots, written by rank 0 only; validation metrics whose states cover both
ranks' images, so the two ranks log (and checkpoint on) the same numbers. Then the same run
across two "nodes": one `torchrun --nnodes 2` per node on 127.0.0.1, which gives the same
model as the single-node run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torchmetrics import Metric

from defects.bundle import load_bundle
from tests.conftest import TINY_STEEL, TINY_WELD, steel_overrides, weld_overrides
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
# Launcher state inherited from an outer distributed job would make this run join it.
LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK")
PLOTS = {"val_pr_curve.csv", "val_pr_curve.png", "val_predictions.png"}


def launch_env() -> dict[str, str]:
    """This environment without an outer job's launcher state, each process on one thread:
    Lightning's launcher sets that for the ranks it starts (cores // processes, here 1),
    torchrun does not for one process per node, and the same thread count keeps the float
    sums, and so the two launches' weights, identical."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    return {**env, "OMP_NUM_THREADS": "1"}


def run_train(args: list[str], timeout: float = 480) -> subprocess.CompletedProcess:
    """`python -m defects.train ARGS` from the repository root; output captured. The timeout
    only stops a hung collective: a run takes ~40 s alone on 2 cores."""
    return subprocess.run(
        [sys.executable, "-m", "defects.train", *args],
        cwd=REPO,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def held_images(metric: Metric) -> int:
    """How many validation images a metric's states hold (list states or per-class counts)."""
    if hasattr(metric, "groundtruth_labels"):  # mAP: one tensor per image
        return len(metric.groundtruth_labels)
    if hasattr(metric, "gate"):  # GateRecords: [N] per batch; one tensor once synced
        state = metric.gate
        return sum(len(t) for t in state) if isinstance(state, list) else len(state)
    return int(metric.count[0])  # SeverstalDice: image-class pairs, per class


class RankProbe(L.Callback):
    """Per rank, per validation epoch: the images each metric holds locally and after a sync,
    and the validation numbers the rank logged. Written to `<path>/rank<r>.json`.

    Runs before the module's `on_validation_epoch_end` (callbacks first), so the states
    still hold the epoch; `sync`/`unsync` gather them and restore them untouched.
    """

    def __init__(self, path: str):
        self.path = Path(path)
        self.records: list[dict] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        counts = {}
        for name, metric in pl_module.named_children():
            if isinstance(metric, Metric):
                local = held_images(metric)
                metric.sync()
                counts[name] = {"local": local, "synced": held_images(metric)}
                metric.unsync()
        self.records.append({"epoch": trainer.current_epoch, "counts": counts})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.records[-1]["logged"] = logged
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.records))


def ddp_args(task: str, data: Path, tmp_path: Path) -> list[str]:
    """The command line of a tiny two-process run of `task`, every output under tmp_path."""
    overrides = weld_overrides if task == "weld" else steel_overrides
    return [
        *overrides(data, tmp_path / "out"),
        "trainer=ddp_cpu",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        f"+callbacks.rank_probe._target_={__name__}.RankProbe",
        f"+callbacks.rank_probe.path={tmp_path / 'probe'}",
    ]


def ddp_outputs(tmp_path: Path, data: Path) -> dict:
    """A finished run's outputs, logs and the probe's records."""
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    out, hydra_dir = tmp_path / "out", tmp_path / "hydra"
    return {"out": out, "hydra": hydra_dir, "ranks": ranks, "data": data, "tmp": tmp_path}


def ddp_run(task: str, tmp_path: Path) -> dict:
    """A tiny two-process run of `task` on one machine (Lightning starts rank 1)."""
    data = tmp_path / "data"
    if task == "weld":
        from defects.data.synthetic import generate_weld_dataset

        generate_weld_dataset(data, **TINY_WELD)
    else:
        from defects.data.synthetic import generate_steel_dataset

        generate_steel_dataset(data, **TINY_STEEL)
    proc = run_train(ddp_args(task, data, tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return ddp_outputs(tmp_path, data)


def torchrun_nodes(args: list[str], tmp_path: Path, timeout: float = 480) -> list[str]:
    """`python -m defects.train ARGS` as two nodes of one process each: one `torchrun
    --nnodes 2 --node-rank R` per node, meeting on 127.0.0.1 (what each machine of a
    cluster runs, with the first one's address). Returns each node's output."""
    port = free_port()
    nodes = []
    for rank in (0, 1):
        log = (tmp_path / f"node{rank}.log").open("w")
        command = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"),
            *("--nproc-per-node", "1", "--node-rank", str(rank)),
            *("--master-addr", "127.0.0.1", "--master-port", str(port)),
            *("-m", "defects.train", *args),
        ]
        proc = subprocess.Popen(command, cwd=REPO, env=launch_env(), stdout=log, stderr=log)
        nodes.append((proc, log))
    try:
        codes = [proc.wait(timeout=timeout) for proc, _ in nodes]
    finally:
        for proc, log in nodes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    outputs = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], "\n".join(text[-4000:] for text in outputs)
    return outputs


@pytest.fixture(scope="module")
def weld_ddp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny weld run on two processes of one machine (shared by the tests below)."""
    return ddp_run("weld", tmp_path_factory.mktemp("weld_ddp"))


def check_rank_zero_writes_once(
    run: dict, plots: set[str], rank1_log: str = "train_ddp_process_1.log"
) -> None:
    out, hydra_dir, tmp = run["out"], run["hydra"], run["tmp"]
    assert [p.relative_to(tmp) for p in tmp.rglob("bundle.pt")] == [Path("out/model_dir/bundle.pt")]
    assert (out / "metrics_dir" / "train.json").stat().st_size > 0
    assert plots <= {p.name for p in (out / "plots_dir").iterdir()}
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert not [p for p in written if "rank" in p or "process_1" in p], written
    # Rank 0 finished (logged its bundle) once; rank 1 ran in the same Hydra run dir under
    # its own job name and finished nothing.
    rank0 = (hydra_dir / "train.log").read_text()
    rank1 = (hydra_dir / rank1_log).read_text()
    assert rank0.count("best checkpoint") == 1 and "bundle" not in rank1


def check_synced(run: dict, n_valid: int, metrics: list[str], monitor: str) -> None:
    """Each rank held part of validation; the metrics' states, once synced, held all of it;
    both ranks logged the same validation numbers every epoch."""
    rank0, rank1 = run["ranks"]
    assert len(rank0) == len(rank1) == 2  # debug=tiny: two epochs
    for epoch0, epoch1 in zip(rank0, rank1, strict=True):
        assert set(epoch0["counts"]) == set(metrics)
        for name in metrics:
            local = (epoch0["counts"][name]["local"], epoch1["counts"][name]["local"])
            assert all(0 < n < n_valid for n in local), (name, local)
            assert sum(local) == n_valid
            assert epoch0["counts"][name]["synced"] == epoch1["counts"][name]["synced"] == n_valid
        assert monitor in epoch0["logged"]
        assert epoch0["logged"] == epoch1["logged"]


def test_ddp_cpu_weld_rank_zero_finishes(weld_ddp: dict) -> None:
    run = weld_ddp
    check_rank_zero_writes_once(run, PLOTS)
    check_synced(run, TINY_WELD["n_valid"], ["val_map"], "val/mAP")
    history = json.loads((run["out"] / "metrics_dir" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1]  # rank 0 only: no doubled records


def test_ddp_cpu_steel_gate_states_sync(tmp_path: Path) -> None:
    run = ddp_run("steel", tmp_path)
    check_rank_zero_writes_once(run, PLOTS)
    check_synced(run, TINY_STEEL["n_valid"], ["val_dice", "val_seg_dice", "val_gate"], "val/dice")
    assert "val/loss" in run["ranks"][0][0]["logged"]  # sync_dist: the same on both ranks


def test_torchrun_two_nodes_train_the_single_node_model(weld_ddp: dict, tmp_path: Path) -> None:
    """`trainer=ddp_cpu` under `torchrun --nnodes 2 --nproc-per-node 1`, with nothing about
    the layout on the command line (defects.launch reads it from torchrun), gives the
    single-node two-process run's model: the same last-epoch and bundle (best) weights and
    thresholds, bit for bit, and the same report. Equal, not close: the same seed, the
    same two shards (DistributedSampler by global rank), the same gloo all-reduce of two
    ranks and one thread per process; only who started the processes differs."""
    outputs = torchrun_nodes(ddp_args("weld", weld_ddp["data"], tmp_path), tmp_path)
    run = ddp_outputs(tmp_path, weld_ddp["data"])
    for rank in (0, 1):  # each node ran one rank of a world of two
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in outputs[rank], outputs[rank][-3000:]
    check_rank_zero_writes_once(run, PLOTS, rank1_log="train_rank1.log")
    check_synced(run, TINY_WELD["n_valid"], ["val_map"], "val/mAP")

    last, expected_last = (
        torch.load(r["out"] / "model_dir" / "checkpoints" / "last.ckpt", weights_only=True)
        for r in (run, weld_ddp)
    )
    nodes, single = (load_bundle(r["out"] / "model_dir" / "bundle.pt") for r in (run, weld_ddp))
    for got, expected in ((last, expected_last), (nodes, single)):  # the last and best weights
        assert got["state_dict"].keys() == expected["state_dict"].keys()
        assert all(torch.equal(got["state_dict"][k], v) for k, v in expected["state_dict"].items())
    assert nodes["thresholds"] == single["thresholds"]
    assert nodes["metrics"] == single["metrics"]
    report, expected = (r["out"] / "metrics_dir" / "train.json" for r in (run, weld_ddp))
    assert report.read_text() == expected.read_text()
    assert run["ranks"] == weld_ddp["ranks"]  # per epoch: images per rank, logged numbers
