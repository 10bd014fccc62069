"""`prepare` and a `pipe` stage killed mid-way, then run again: complete outputs, nothing else.

Each command runs as a subprocess under a small wrapper that pauses it inside the write (at
the N-th call of the function that writes an image or copies a file) and says so; the test
then sends SIGKILL, so the kill lands mid-write, every time. The rerun, unwrapped, must end
with the same files a run never killed writes, and no half-written file or temp folder.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate

from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]

# Run `module` as `python -m module ARGS`, with `target` (a module's function) pausing for
# good once it has been called `after` times; `marker` says it paused.
PAUSED = """
import importlib, runpy, sys, time
from pathlib import Path

marker, target, after, module, *args = sys.argv[1:]
owner_name, name = target.rsplit(".", 1)
owner = importlib.import_module(owner_name)
real, calls = getattr(owner, name), []

def paused(*a, **k):
    calls.append(1)
    if len(calls) > int(after):
        Path(marker).write_text("paused")
        time.sleep(600)
    return real(*a, **k)

setattr(owner, name, paused)
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run(module: str, args: list[str]) -> None:
    command = [sys.executable, "-m", module, *args]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def kill_midway(module: str, args: list[str], target: str, after: int, tmp: Path) -> None:
    """Run `module` until `target`'s call number `after + 1`, then SIGKILL it."""
    marker = tmp / f"paused-{module}"
    command = [sys.executable, "-c", PAUSED, str(marker), target, str(after), module, *args]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"{module} ended before the kill:\n{proc.stderr.read()[-6000:]}")
            assert time.monotonic() < deadline, f"{module} never reached {target}"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def hidden(folder: Path) -> list[str]:
    """Names the atomic writers use for work in progress (`.NAME.tmp-*`, `.NAME.old-*`)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`defects.prepare task=weld` killed while it writes images, then run again."""
    tmp = tmp_path_factory.mktemp("prepare")
    data, plots = tmp / "out" / "data", tmp / "out" / "plots"
    args = [
        "task=weld",
        *("prepare.n_train=24", "prepare.n_valid=4", "prepare.n_test=4"),
        *("prepare.width=160", "prepare.height=128"),
        f"paths.data_dir={data}",
        f"paths.plots_dir={plots}",
        f"hydra.run.dir={tmp / 'hydra'}",
    ]
    kill_midway("defects.prepare", args, "cv2.imwrite", 10, tmp)
    after_kill = {"hidden": hidden(data.parent), "data": data.exists()}
    run("defects.prepare", args)
    # What a run never killed writes: the configured generator, called here.
    reference = tmp / "reference"
    cfg = compose_config([a for a in args if not a.startswith("hydra.")])
    instantiate(cfg.prepare, out_dir=str(reference), _convert_="all")
    return {"data": data, "plots": plots, "after_kill": after_kill, "reference": reference}


def test_prepare_killed_mid_write_leaves_no_dataset(prepared: dict) -> None:
    after_kill = prepared["after_kill"]
    assert not after_kill["data"]
    assert [n for n in after_kill["hidden"] if n.startswith(".data.tmp-")]  # it was writing


def test_prepare_rerun_writes_the_whole_dataset_and_nothing_else(prepared: dict) -> None:
    data = prepared["data"]
    assert digest(data) == digest(prepared["reference"])
    assert len(list((data / "train" / "images").iterdir())) == 24
    assert hidden(data.parent) == []  # the killed run's temp folder is gone
    assert (prepared["plots"] / "data_samples.png").stat().st_size > 0


def test_pipe_import_killed_mid_copy_then_rerun(prepared: dict, tmp_path: Path) -> None:
    """The pipe's `import` stage, killed while it copies the source, then run again."""
    source, work = prepared["data"], tmp_path / "work"
    files = digest(source)
    args = [
        "import",
        f"pipe.source={source}",
        f"pipe.work_dir={work}",
        *(f"paths.{key}={tmp_path / key}" for key in ("model_dir", "metrics_dir", "plots_dir")),
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    kill_midway("defects.pipe", args, "shutil.copyfile", 10, tmp_path)
    assert not (work / "imported").exists()
    assert [n for n in hidden(work) if n.startswith(".imported.tmp-")]
    run("defects.pipe", args)
    assert digest(work / "imported") == files
    assert hidden(work) == []
    assert digest(source) == files  # the source is only read
