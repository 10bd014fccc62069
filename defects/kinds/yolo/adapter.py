"""The one module that imports Ultralytics (AGPL-3.0, the optional `yolo` extra).

Everything the YOLO kind needs from it goes through here: building a detection network from a
model yaml, the detection loss, and (for the comparison benchmark only) its own trainer. The
package changes its internals between minor versions, so the version is pinned exactly in
`pyproject.toml` and `tests/test_yolo_adapter.py` checks the few APIs used here.

Importing Ultralytics has side effects this module undoes or prevents:
- it sets `OMP_NUM_THREADS=1` when unset (torch would then run on one core): restored;
- it replaces `torch.save` with a retrying wrapper: restored;
- it replaces `PIL.Image.open` with one that, on an unidentified file, tries to install and
  register a HEIF plugin (our decoder's "not an image" error became "No module named
  'pi_heif'"): restored;
- it calls `cv2.setNumThreads(0)` and changes numpy/torch print options: restored;
  (the warning filters it adds -- ignoring a few deprecation and ONNX-tracer warnings -- are
  left: the libraries it imports add theirs in the same list, and those must stay);
- it writes a settings file under the home folder unless `YOLO_CONFIG_DIR` is set: pointed at
  a folder under the working directory (`.cache/ultralytics`), a run's own folder;
- it checks DNS unless `YOLO_OFFLINE`: set.
(matplotlib's font cache under HOME is not Ultralytics': torchmetrics imports matplotlib for
every task; set `MPLCONFIGDIR` to move it.)
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

EXTRA = "yolo"
VERSION = "8.4.190"
INSTALL_HINT = f'pip install -e ".[{EXTRA}]"  (ultralytics=={VERSION}, AGPL-3.0)'
CONFIG_DIR = Path(".cache") / "ultralytics"

_loaded: dict[str, Any] = {}


class MissingExtraError(ImportError):
    """The YOLO kind was asked for without the `yolo` extra installed."""


def _guarded_import() -> dict[str, Any]:
    """Import the Ultralytics modules we use, leaving the process as it was before."""
    import cv2
    import numpy as np
    from PIL import Image

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(CONFIG_DIR.resolve()))
    omp = os.environ.get("OMP_NUM_THREADS")
    threads = torch.get_num_threads()
    cv2_threads = cv2.getNumThreads()
    saver = torch.save
    np_print = np.get_printoptions()
    pil_open = Image.open
    torch_print = torch._tensor_str.PRINT_OPTS.__dict__.copy()
    try:
        modules = {
            name: importlib.import_module(f"ultralytics.{name}")
            for name in ("nn.tasks", "utils.loss", "utils")
        }
        modules["ultralytics"] = importlib.import_module("ultralytics")
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "ultralytics":
            raise MissingExtraError(
                f"the YOLO kind (task=winding) needs the '{EXTRA}' extra: {INSTALL_HINT}"
            ) from err
        raise
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
        torch.save = saver
        np.set_printoptions(**np_print)
        torch.set_printoptions(**torch_print)
        Image.open = pil_open
    installed = getattr(modules["ultralytics"], "__version__", "?")
    if installed != VERSION:
        raise MissingExtraError(
            f"the YOLO kind is tested with ultralytics=={VERSION}, found {installed}: "
            f"{INSTALL_HINT}"
        )
    return modules


def ultralytics() -> dict[str, Any]:
    """The imported modules (once per process)."""
    if not _loaded:
        _loaded.update(_guarded_import())
    return _loaded


def available() -> bool:
    """Whether the `yolo` extra is installed (without importing it)."""
    return importlib.util.find_spec("ultralytics") is not None


def model_yaml(name: str) -> dict[str, Any]:
    """A model definition by name (`yolo12n.yaml`, `yolo11s.yaml`) or path, as a plain dict.

    The scale letter in the name picks the width/depth row of the family's yaml; the dict
    (not the name) is stored in bundles, so a bundle rebuilds without the yaml file.
    """
    tasks = ultralytics()["nn.tasks"]
    spec = dict(tasks.yaml_model_load(name))
    spec.pop("yaml_file", None)
    return spec


def detection_model(spec: dict[str, Any], num_classes: int, channels: int) -> torch.nn.Module:
    """An Ultralytics DetectionModel from a yaml dict, with `num_classes` outputs."""
    tasks = ultralytics()["nn.tasks"]
    spec = dict(spec)
    spec["nc"] = num_classes
    spec["channels"] = channels
    return tasks.DetectionModel(spec, ch=channels, nc=num_classes, verbose=False)


def detection_loss(model: torch.nn.Module, box: float, cls: float, dfl: float) -> Any:
    """Ultralytics' detection loss (task-aligned assignment, CIoU + DFL + BCE) for `model`.

    The loss reads its gains as attributes of `model.args` and caches the model's device when
    built: build it after the model is on its device (`YoloModule.criterion` does, lazily).
    Its call returns (sum of the three gained losses x batch size, the three detached).
    """
    model.args = SimpleNamespace(box=box, cls=cls, dfl=dfl)
    return ultralytics()["utils.loss"].v8DetectionLoss(model)


def detect_head(model: torch.nn.Module) -> torch.nn.Module:
    """The model's last module, the Detect head (strides, `export`, `format`)."""
    return model.model[-1]


def train_reference(data_yaml: str, spec_name: str, project: str, **overrides: Any) -> Any:
    """Ultralytics' own trainer (`YOLO(yaml).train(...)`), for the comparison benchmark only."""
    modules = ultralytics()
    model = modules["ultralytics"].YOLO(spec_name)
    return model, model.train(data=data_yaml, project=project, **overrides)
