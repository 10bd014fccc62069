"""Shared fixtures: offline environment, a tiny synthetic weld dataset, composed configs."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

for _name, _value in (
    ("HF_HUB_OFFLINE", "1"),
    ("YOLO_OFFLINE", "1"),
    ("YOLO_AUTOINSTALL", "false"),
    ("MPLBACKEND", "Agg"),
):
    os.environ[_name] = _value
os.environ.pop("MLFLOW_TRACKING_URI", None)
# The machine's settings (defects/settings.py) stay out of the tests: no DEFECTS_* variable
# from the shell, and no developer's ./.env (an empty file instead).
for _name in [n for n in os.environ if n.upper().startswith("DEFECTS_")]:
    del os.environ[_name]
os.environ["DEFECTS_ENV_FILE"] = os.devnull

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from defects.data.synthetic import generate_steel_dataset, generate_weld_dataset  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "defects" / "configs"
TINY_WELD = dict(n_train=8, n_valid=4, n_test=4, width=160, height=128, seed=3)
TINY_STEEL = dict(n_train=8, n_valid=4, n_test=4, width=320, height=64, seed=5)
# A small network of the configured kind: same code path, a fraction of the compute.
TINY_SEGMENTER = [
    "model.net.encoder=timm-efficientnet-b0",
    "model.net.decoder_channels=[16,16,16,16,16]",
    "model.net.gate_encoder=timm-efficientnet-b0",
]


@pytest.fixture(autouse=True, scope="module")
def release_memory_after_module() -> Iterator[None]:
    """Hand the heap a module freed (its trained models, datasets) back to the system: glibc
    keeps freed pages otherwise, so each xdist worker would hold its largest module's peak
    for the rest of the run."""
    yield
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Torch on `count` threads inside the block, the previous count restored after: training
    and tiny-image tests on two shared cores run faster and steadier on one thread (OpenMP
    threads wait on each other while the cores are taken)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test (see `torch_threads`)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def weld_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny weld dataset in the native YOLO layout (read-only: copy it before changing it)."""
    root = tmp_path_factory.mktemp("weld") / "data"
    generate_weld_dataset(root, **TINY_WELD)
    return root


def compose_config(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """The config that `python -m defects.train ARGS` would see, without running Hydra's app."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def weld_overrides(data_root: Path, out_dir: Path) -> list[str]:
    """Overrides for a quick weld run on tiny data with every output under `out_dir`."""
    return [
        "task=weld",
        "debug=tiny",
        "logger=none",
        "model.net.min_size=128",
        "model.net.max_size=160",
        "data.batch_size=2",
        f"paths.data_dir={data_root}",
        *(f"paths.{key}={out_dir / key}" for key in ("model_dir", "metrics_dir", "plots_dir")),
    ]


@pytest.fixture
def weld_cfg(weld_root: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a weld config pointed at the tiny dataset, with every output under tmp_path."""

    def make(*overrides: str, data_root: Path | None = None) -> DictConfig:
        return compose_config([*weld_overrides(data_root or weld_root, tmp_path), *overrides])

    return make


@pytest.fixture(scope="session")
def steel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Severstal-layout strips, 320x64 (read-only: copy it before changing it)."""
    root = tmp_path_factory.mktemp("steel") / "data"
    generate_steel_dataset(root, **TINY_STEEL)
    return root


def steel_overrides(data_root: Path, out_dir: Path) -> list[str]:
    """Overrides for a quick steel run on tiny strips with every output under `out_dir`."""
    return [
        "task=steel",
        "debug=tiny",
        "logger=none",
        "data.shape=[64,320]",
        "data.crop=[64,128]",
        "data.batch_size=2",
        *TINY_SEGMENTER,
        f"paths.data_dir={data_root}",
        *(f"paths.{key}={out_dir / key}" for key in ("model_dir", "metrics_dir", "plots_dir")),
    ]


def report_metrics(
    path: Path, prefix: str, nest: dict[str, str], extra: Sequence[str] = ()
) -> dict[str, float]:
    """A metrics JSON (`defects.reports.write_metrics_json`) read back as the `{prefix}/name`
    numbers it was written from: per-class groups unfolded (`nest`: JSON key -> metric group,
    e.g. {"AP": "AP"}), `extra` keys (thresholds) left out. Lets a test compare a report with
    what the run returned, key by key, instead of checking that a number is a number."""
    import json

    flat: dict[str, float] = {}
    for key, value in json.loads(path.read_text()).items():
        if key in extra:
            continue
        if key in nest:
            flat.update({f"{prefix}/{nest[key]}/{leaf}": v for leaf, v in value.items()})
        else:
            flat[f"{prefix}/{key}"] = value
    return flat


def assert_png(path: Path, min_width: int = 300, min_height: int = 200, ink: float = 0.03) -> None:
    """A PNG that opens, has room to show something and shows it: not one flat colour, and
    more than a title on white (a share `ink` of its pixels at least drawn)."""
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG", path
        assert min_width <= image.width <= 6000 and min_height <= image.height <= 8000, path
        grey = np.asarray(image.convert("L"), dtype=np.float32)
    assert grey.std() > 5.0, (path, grey.std())
    assert (grey < 245).mean() > ink, (path, (grey < 245).mean())
