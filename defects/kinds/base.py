"""The one interface a model kind implements, and the predictor base every front end calls.

Entry points (`train`, `evaluate`, `predict`, `export`, `serve`) hold no "which kind is
this?": they look the kind up in the registry (`defects.kinds.get_kind`) by the name a
bundle carries, or `kind_of(lightning_module)`, and call these methods. A new kind is a
folder with the parts in `KIND_PARTS`; its `kind.py` subclasses `ModelKind` and `Predictor`
(or reuses a shared predictor), and every verb works for it.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, overload

import numpy as np
from omegaconf import DictConfig

from defects.config import ConfigError
from defects.data.images import decode_image
from defects.formats.io import atomic_write_text, atomic_write_with
from defects.results import Result

log = logging.getLogger("defects")

EXPORT_MANIFEST = "export.json"
EXPORT_FORMAT = "defects-export"
#: the files every kind folder holds (see `defects.kinds`)
KIND_PARTS = ("kind", "module", "net", "predictor", "export")
#: images per forward pass when nothing says otherwise: a few share one call, memory stays small
BATCH_SIZE = 4

T = TypeVar("T")
#: the result type a predictor returns (`Detections`, `SegmentationResult`, ...)
R = TypeVar("R", bound=Result)
R_co = TypeVar("R_co", bound=Result, covariant=True)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` consecutive items (the last may be shorter); `itertools.batched` is
    Python 3.12+."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class EvalSample(Protocol):
    """One stored image of a split; the kind decodes it through its predictor."""

    @property
    def image(self) -> Path: ...


class EvalData(Protocol):
    """What a kind needs from a DataModule to tune and evaluate on the stored images.

    `truth` is the kind's own ground truth of a sample: {boxes, class_ids} for box kinds,
    [K, H, W] bool masks for segmentation. `save_preview` draws a few samples for `prepare`.
    """

    def eval_samples(self, split: str) -> Sequence[EvalSample]: ...

    def truth(self, sample: Any) -> Any: ...

    def save_preview(self, out_png: Path, split: str = "train") -> Path: ...


def split_prefix(split: str) -> str:
    """Metric prefix of a split: `val/...` for validation (Lightning's), else the split name."""
    return "val" if split == "valid" else split


class Predictor(ABC, Generic[R_co]):
    """decode -> network -> thresholds -> results in original pixels, for any backend.

    `meta` is the bundle without its weights (task, name, class names, thresholds, input),
    so an ONNX export and the eager bundle build the same predictor.
    """

    #: the threshold `--threshold` / `--confidence` override, and `Result.above` cuts at
    main_threshold: str = "score"

    def __init__(self, meta: dict[str, Any], backend: str = "eager"):
        self.meta = meta
        self.class_names: list[str] = list(meta["class_names"])
        self.channels = input_channels(meta)
        self.backend = backend
        self.thresholds: dict[str, Any] = dict(meta["thresholds"])
        for key in self.required_thresholds():
            if key not in self.thresholds:
                raise ValueError(
                    f"bundle thresholds lack '{key}' (have {sorted(self.thresholds)}): "
                    "retrain or add it to the bundle"
                )

    @property
    def kind(self) -> str:
        """The model kind's name, as the bundle records it (`defects.load` records the
        current name where an older bundle carries an alias)."""
        return str(self.meta["model"]["kind"])

    @property
    def task(self) -> str:
        """The task the bundle was trained for (weld, steel, ...); the kind's name if unrecorded."""
        return str(self.meta.get("task", self.kind))

    def required_thresholds(self) -> tuple[str, ...]:
        """The threshold names a bundle must hold for this predictor; checked at load."""
        return (self.main_threshold,)

    def set_threshold(self, value: float) -> None:
        """Override the main threshold (the score cut, or the gate of a gated segmenter)."""
        self.thresholds[self.main_threshold] = float(value)

    def decode(self, image: Any) -> np.ndarray:
        """The library's one decoder: a path, bytes, PIL image or uint8 array -> uint8 array."""
        return decode_image(image, self.channels)

    @abstractmethod
    def predict_batch(self, images: Sequence[Any]) -> list[R_co]:
        """Results for each image, at its original resolution."""

    def predict(self, image: Any) -> R_co:
        """The result for one image (a path, bytes, PIL image or uint8 array)."""
        return self.predict_batch([image])[0]

    @overload
    def predict_many(
        self, images: Iterable[Any], batch_size: int = ..., step: None = None
    ) -> Iterator[tuple[np.ndarray, R_co]]: ...

    @overload
    def predict_many(
        self,
        images: Iterable[Any],
        batch_size: int = ...,
        *,
        step: Callable[[list[np.ndarray]], Sequence[T]],
    ) -> Iterator[tuple[np.ndarray, T]]: ...

    def predict_many(
        self,
        images: Iterable[Any],
        batch_size: int = BATCH_SIZE,
        step: Callable[[list[np.ndarray]], Sequence[Any]] | None = None,
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """(decoded image, result) for each image in order, `batch_size` per forward pass.

        The library's one batching loop (predict, prelabel, evaluation, tuning, pipe): each
        image is decoded once and the array is yielded beside its result, for overlays and
        truth. `step` replaces `predict_batch` where a caller needs the raw outputs (every
        detection for mAP, ungated probabilities for threshold tuning).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        run = step if step is not None else self.predict_batch
        for batch in batched(images, batch_size):
            arrays = [self.decode(image) for image in batch]
            yield from zip(arrays, run(arrays), strict=True)


@dataclass
class Report:
    """What evaluating a split produced: metrics (prefixed) and a writer for the files."""

    metrics: dict[str, float]
    prefix: str
    extras: dict[str, Any] = field(default_factory=dict)


class PredictionWriter(Generic[R]):
    """`defects predict` output: `<name>.json` ({image: record}) and overlays/<stem>.png.

    Kinds with more to write (masks, a submission file) extend `add` and `close`.
    """

    report_name = "predictions.json"

    def __init__(self, predictor: Predictor[R], out_dir: Path, overlays: bool = True):
        self.predictor = predictor
        self.out_dir = out_dir
        self.overlays = overlays
        self.records: dict[str, Any] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        if overlays:
            (out_dir / "overlays").mkdir(exist_ok=True)

    def add(self, path: Path, image: np.ndarray, result: R) -> None:
        """Record the result of the image at `path`; write its overlay when asked."""
        self.records[path.name] = result.record()
        if self.overlays:
            from PIL import Image

            picture = Image.fromarray(result.overlay(image))
            atomic_write_with(self.out_dir / "overlays" / f"{path.stem}.png", picture.save)

    def close(self) -> Path:
        """Write the report of every result added (whole or not at all); return its path."""
        report = self.out_dir / self.report_name
        atomic_write_text(report, json.dumps(self.records, indent=1))
        return report


class ModelKind(ABC):
    """One kind of model: how it trains, finishes, evaluates, predicts and exports.

    Its name is the folder its `kind.py` lives in (`defects/kinds/yolo/kind.py` -> "yolo");
    `aliases` are names older bundles carry. A kind defined outside such a folder (a test's
    throwaway kind) sets `name` itself.
    """

    name: str = ""
    aliases: tuple[str, ...] = ()
    writer_class: type[PredictionWriter[Any]] = PredictionWriter

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        package, _, module = cls.__module__.rpartition(".")
        if "name" not in cls.__dict__ and module == "kind" and package:
            cls.name = package.rpartition(".")[2]

    def __init__(self) -> None:
        if not self.name:
            raise ValueError(
                f"{type(self).__qualname__}: a model kind is named by its folder "
                "(<name>/kind.py) or by a `name` class attribute"
            )

    # ------------------------------------------------------------------ training
    @abstractmethod
    def bundle_from_module(self, module: Any, cfg: DictConfig) -> dict[str, Any]:
        """The bundle (see `defects.bundle.save_bundle`) of a trained LightningModule, less
        `model.kind`, which `bundle` adds."""

    def bundle(self, module: Any, cfg: DictConfig) -> dict[str, Any]:
        """`bundle_from_module` with the kind's name recorded (what `get_kind` reads back)."""
        bundle = self.bundle_from_module(module, cfg)
        bundle["model"] = {"kind": self.name, **bundle["model"]}
        return bundle

    def tune(
        self, bundle: dict[str, Any], datamodule: EvalData, search: Any = None
    ) -> dict[str, Any]:
        """Thresholds for the bundle, tuned on validation (`tune_with_curves` less its curves).

        `search` is the run's `tune` config node built (`defects.runtime.make_search`): how a
        kind that takes one tunes (the gated kind's `ThresholdSearch`); None where the config
        has no `tune` node. A kind that takes none refuses one rather than ignore it."""
        return self.tune_with_curves(bundle, datamodule, search)[0]

    def tune_with_curves(
        self, bundle: dict[str, Any], datamodule: EvalData, search: Any = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The thresholds (see `tune`) and the curves they were chosen from (the objective
        against each searched threshold, `defects.reports.threshold_curve`): the bundle keeps
        them as `tuning`, and every report of it draws them. What a kind that tunes overrides;
        the default keeps the configured thresholds and has no curves."""
        refuse_search(self, search)
        return bundle["thresholds"], []

    def tuned_bundle(
        self, bundle: dict[str, Any], datamodule: EvalData, search: Any = None
    ) -> dict[str, Any]:
        """The bundle with tuned thresholds and, where the kind searched, its `tuning`."""
        thresholds, curves = self.tune_with_curves(bundle, datamodule, search)
        return {**bundle, "thresholds": thresholds, **({"tuning": curves} if curves else {})}

    # ------------------------------------------------------------------ inference
    @abstractmethod
    def build_network(self, kwargs: dict[str, Any]) -> Any:
        """The nn.Module a bundle's `model.kwargs` describe (weights not loaded)."""

    def network(self, bundle: dict[str, Any]) -> Any:
        """The bundle's network with its weights loaded, in eval mode."""
        net = self.build_network(dict(bundle["model"]["kwargs"]))
        net.load_state_dict(bundle["state_dict"])
        return net.eval()

    @abstractmethod
    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> Predictor:
        """The eager predictor of a bundle."""

    @abstractmethod
    def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Write the ONNX graph(s) into `folder`; return what `onnx_predictor` needs."""

    @abstractmethod
    def onnx_predictor(self, folder: Path, manifest: dict[str, Any], threads: int = 0) -> Predictor:
        """The ONNX Runtime predictor of an export folder."""

    # ------------------------------------------------------------------ evaluation
    #: the kind's evaluation module, with `evaluate(predictor, datamodule, split) -> Report`
    #: and `write_report(report, class_names, metrics_json, plots_dir) -> [paths]`
    evaluation: Any = None

    def evaluate(self, predictor: Predictor, datamodule: EvalData, split: str) -> Report:
        """Score `split` from the predictor's own outputs at original resolution."""
        return self.evaluation.evaluate(predictor, datamodule, split)

    def write_report(
        self, report: Report, class_names: list[str], metrics_json: Path, plots_dir: Path
    ) -> list[Path]:
        """metrics JSON for `dvc metrics`, curves for `dvc plots`, figures for people."""
        return self.evaluation.write_report(report, class_names, metrics_json, plots_dir)

    def writer(self, predictor: Predictor, out_dir: Path, overlays: bool) -> PredictionWriter:
        """What `defects predict` writes results with (`writer_class`)."""
        return self.writer_class(predictor, out_dir, overlays)


def refuse_search(kind: ModelKind, search: Any) -> None:
    """A `tune` node given to a kind that tunes its own way is an error, not ignored."""
    if search is not None:
        raise ConfigError(
            f"tune: the {kind.name} kind takes no tune settings (got "
            f"{type(search).__qualname__}); remove the tune node from the config"
        )


def input_channels(bundle: dict[str, Any]) -> int:
    """The channel count a bundle's network takes; a bundle without one is refused."""
    if "channels" not in bundle["input"]:
        raise ValueError("bundle input lacks 'channels' (1 = grey, 3 = RGB)")
    return int(bundle["input"]["channels"])


def bundle_meta(bundle: dict[str, Any]) -> dict[str, Any]:
    """A bundle without weights and training metrics: what a predictor is configured by."""
    return {k: v for k, v in bundle.items() if k not in ("state_dict", "metrics")}
