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
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

EXTRA = "yolo"
VERSION = "8.4.190"
INSTALL_HINT = f'pip install -e ".[{EXTRA}]"  (ultralytics=={VERSION}, AGPL-3.0)'
CONFIG_DIR = Path(".cache") / "ultralytics"

# Ultralytics' objects (a DetectionModel, its Detect head) are typed `Any` in this module:
# their classes are imported at run time only, and the attributes used here (`args`, `names`,
# `fuse(verbose=)`, `model[-1]`, the head's `export`/`format`/`dynamic`) are not nn.Module's.
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


def detection_loss(model: Any, box: float, cls: float, dfl: float) -> Any:
    """Ultralytics' detection loss (task-aligned assignment, CIoU + DFL + BCE) for `model`.

    The loss reads its gains as attributes of `model.args` and caches the model's device when
    built: build it after the model is on its device (`YoloModule.criterion` does, lazily).
    Its call returns (sum of the three gained losses x batch size, the three detached).
    """
    model.args = SimpleNamespace(box=box, cls=cls, dfl=dfl)
    return ultralytics()["utils.loss"].v8DetectionLoss(model)


def fuse(model: Any) -> torch.nn.Module:
    """The DetectionModel's own Conv+BN (and RepConv) fusion, in place, without its printout."""
    model.eval()
    return model.fuse(verbose=False)


def detect_head(model: Any) -> Any:
    """The model's last module, the Detect head (strides, `export`, `format`)."""
    return model.model[-1]


# ---------------------------------------------------------------- for the benchmarks only
def train_reference(
    data_yaml: str,
    spec_name: str,
    project: str,
    callbacks: dict[str, Callable[[Any], None]] | None = None,
    **overrides: Any,
) -> Path:
    """Ultralytics' own trainer (`YOLO(yaml).train(...)`); returns its best checkpoint.
    `callbacks` are added to its events by name (`on_train_epoch_start`, ...): the speed
    benchmark times its epochs with them.

    Its logging integrations are switched off first (in its settings file, which lives under
    `CONFIG_DIR`): with mlflow installed it would open `mlflow.db` in the working directory,
    with dvclive write `dvclive/`, and `sync` sends usage events.
    """
    settings = ultralytics()["utils"].SETTINGS
    switches = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "sync")
    settings.update({key: False for key in switches if key in settings})
    model = ultralytics()["ultralytics"].YOLO(spec_name)
    for event, callback in (callbacks or {}).items():
        model.add_callback(event, callback)
    model.train(data=data_yaml, project=project, **overrides)
    return Path(model.trainer.best)


def reference_train_dataset(data_yaml: str, **overrides: Any) -> tuple[Any, Any]:
    """Ultralytics' own augmented training dataset of `data_yaml`'s train split (its mosaic,
    random_perspective, HSV, flips, mixup) and the hyperparameter namespace it was built with
    (its `close_mosaic(hyp)` needs it). For the benchmark that trains our module on their data.
    """
    ultralytics()
    hyp = importlib.import_module("ultralytics.cfg").get_cfg(overrides=overrides)
    data = importlib.import_module("ultralytics.data.utils").check_det_dataset(
        data_yaml, autodownload=False
    )
    build = importlib.import_module("ultralytics.data.build")
    dataset = build.build_yolo_dataset(hyp, data["train"], hyp.batch, data, mode="train")
    return dataset, hyp


def reference_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The EMA weights of an Ultralytics checkpoint (a pickled model: their format, so
    `weights_only=False`; only for checkpoints this benchmark wrote), in float32."""
    ultralytics()  # its classes must be importable to unpickle
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"]
    return {k: v.float() for k, v in model.float().state_dict().items()}


def reference_model(detection: Any, class_names: list[str], spec_name: str) -> Any:
    """An Ultralytics `YOLO` around a DetectionModel (ours or theirs), for its predict/val."""
    import copy

    model = ultralytics()["ultralytics"].YOLO(spec_name)
    detection = copy.deepcopy(detection).float().eval()
    detection.names = dict(enumerate(class_names))
    model.model = detection
    return model


def reference_validate(model: Any, data_yaml: str, split: str, **overrides: Any) -> dict:
    """Ultralytics' validator (its letterbox, NMS, 101-point AP, P/R at max mean F1)."""
    metrics = model.val(data=data_yaml, split=split, plots=False, verbose=False, **overrides)
    box = metrics.box
    return {
        "precision": float(box.mp),
        "recall": float(box.mr),
        "mAP50": float(box.map50),
        "mAP50-95": float(box.map),
    }


def reference_box_metrics(
    preds: list[dict[str, torch.Tensor]], truths: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Ultralytics' matching and `ap_per_class` on given detections (0-based `labels`,
    xyxy pixels): the same predictions scored the way its validator scores its own."""
    ultralytics()  # imported once, side effects undone
    metrics = importlib.import_module("ultralytics.utils.metrics")
    validator = importlib.import_module("ultralytics.engine.validator").BaseValidator
    # match_predictions reads only `self.iouv` (the 10 IoU thresholds 0.5:0.95)
    fake = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    tps, confs, pred_cls, target_cls = [], [], [], []
    for pred, truth in zip(preds, truths, strict=True):
        order = torch.argsort(pred["scores"], descending=True, stable=True)
        boxes, labels, scores = pred["boxes"][order], pred["labels"][order], pred["scores"][order]
        target_cls.append(truth["labels"])
        confs.append(scores)
        pred_cls.append(labels)
        if len(truth["labels"]) and len(labels):
            iou = metrics.box_iou(truth["boxes"].float(), boxes.float())
            tps.append(validator.match_predictions(fake, labels, truth["labels"], iou))
        else:
            tps.append(torch.zeros((len(labels), 10), dtype=torch.bool))
    result = metrics.ap_per_class(
        torch.cat(tps).numpy(),
        torch.cat(confs).numpy(),
        torch.cat(pred_cls).numpy(),
        torch.cat(target_cls).numpy(),
    )
    p, r, ap = result[2], result[3], result[5]
    return {
        "precision": float(p.mean()),
        "recall": float(r.mean()),
        "mAP50": float(ap[:, 0].mean()),
        "mAP50-95": float(ap.mean()),
    }
