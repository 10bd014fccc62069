"""What every model kind must show, and how each kind shows it: an overfit run on a memorised
split, the metric of its evaluation recomputed from `defects predict`'s files, and eager vs
ONNX on the same images.

`CONTRACTS` is keyed by kind name; `test_kinds_contract.py` is parametrized over the
registry's kinds, so a new kind without an entry here fails there. The mechanism is shared
by result family (boxes, masks); what varies per kind is its data, its overrides and its
learning thresholds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_config, steel_overrides, torch_threads, weld_overrides

IMAGES = 4  # each split the same four images: what the model trains on is what is scored


@dataclass
class Trained:
    """An overfit run: its bundle, the loss per epoch, the final metrics, its data and the
    overrides that compose its config (for `evaluate`)."""

    bundle: Path
    losses: list[float]
    metrics: dict[str, float]
    data: Path
    overrides: list[str]

    @property
    def test_images(self) -> list[Path]:
        return sorted((self.data / "test" / "images").glob("*.png"))


@dataclass
class Contract:
    """How one kind trains on memorised data, what "it learned" means for it, and how its
    outputs are compared (`family`: the shape of its results)."""

    make_data: Callable[[Path], None]
    overrides: Callable[[Path, Path], list[str]]
    extra: Sequence[str]
    learned: Callable[[list[float], dict[str, float]], None]
    family: Family

    def train(self, tmp: Path) -> Trained:
        from defects.train import train

        root = tmp / "data"
        self.make_data(root)
        memorise_split(root)
        base = [
            o for o in self.overrides(root, tmp) if not o.startswith(("debug=", "data.batch_size="))
        ]
        overrides = [*base, "debug=overfit", f"data.batch_size={IMAGES}", *self.extra]
        with torch_threads(1):
            metrics = train(compose_config(overrides))
        history = json.loads((tmp / "metrics_dir" / "history.json").read_text())
        losses = [r["train/loss"] for r in history]
        return Trained(tmp / "model_dir" / "bundle.pt", losses, metrics, root, overrides)


def memorise_split(root: Path) -> Path:
    """valid and test become copies of train, so the final evaluation scores training images."""
    for split in ("valid", "test"):
        shutil.rmtree(root / split, ignore_errors=True)
        shutil.copytree(root / "train", root / split)
    return root


def fell(losses: list[float], factor: float) -> bool:
    """The last five epochs' mean loss is below `factor` x the first epoch's loss."""
    tail = losses[-5:]
    return sum(tail) / len(tail) < factor * losses[0]


# ------------------------------------------------------------------ result families
class Family:
    """How one shape of result is scored from `defects predict`'s files and compared between
    backends."""

    #: the evaluation metrics that `metrics_from_predict` recomputes
    keys: tuple[str, ...] = ()

    def metrics_from_predict(self, run: Trained, out: Path) -> dict[str, float]:
        raise NotImplementedError

    def assert_same(self, eager: object, onnx: object, images: list[Path]) -> None:
        raise NotImplementedError


class Boxes(Family):
    """mAP from every detection `predict --threshold 0` writes; P/R/F1 from the default cut."""

    keys = ("test/mAP", "test/mAP50", "test/precision", "test/recall", "test/f1")

    def metrics_from_predict(self, run: Trained, out: Path) -> dict[str, float]:
        from defects.bundle import load_bundle
        from defects.cli import predict
        from defects.data.detection import DetectionDataModule
        from defects.kinds.detection.evaluate import score_detections

        bundle = load_bundle(run.bundle)
        names = list(bundle["class_names"])
        datamodule = DetectionDataModule(str(run.data), names)
        samples = datamodule.eval_samples("test")
        folder = str(run.data / "test" / "images")
        every = self._read(
            predict(str(run.bundle), folder, str(out / "all"), threshold=0.0, overlays=False),
            samples,
            names,
        )
        cut = self._read(
            predict(str(run.bundle), folder, str(out / "cut"), overlays=False), samples, names
        )
        truths = [datamodule.truth(s) for s in samples]
        threshold = float(bundle["thresholds"]["score"])
        ranked, _ = score_detections(every, truths, names, threshold, "test")
        at_cut, _ = score_detections(cut, truths, names, threshold, "test")
        assert sum(len(d) for d in cut) > 0, "predict wrote no detection at the tuned score"
        return {
            **{k: ranked[k] for k in ("test/mAP", "test/mAP50")},
            **{k: at_cut[k] for k in ("test/precision", "test/recall", "test/f1")},
        }

    @staticmethod
    def _read(path: str, samples: Sequence, names: list[str]) -> list:
        from defects.results import Detections

        rows = json.loads(Path(path).read_text())
        found = []
        for sample in samples:
            dets = rows[sample.image.name]["detections"]
            found.append(
                Detections(
                    np.array([d["box"] for d in dets], dtype=np.float32).reshape(-1, 4),
                    [d["label"] for d in dets],
                    np.array([d["class_id"] for d in dets], dtype=np.int64),
                    np.array([d["score"] for d in dets], dtype=np.float32),
                    names,
                )
            )
        return found

    def assert_same(self, eager: object, onnx: object, images: list[Path]) -> None:
        """Each backend's detections scoring at least 0.05 have a partner on the other side
        (same class, boxes within 1e-3 px, scores within 1e-4) among its detections above
        0.01: the ranking's tail can cross a cut on 1e-6 differences."""
        total = 0
        for image in images:
            a = eager.detect_all([image])[0]  # type: ignore[attr-defined]
            b = onnx.detect_all([image])[0]  # type: ignore[attr-defined]
            for one, other in ((a, b), (b, a)):
                for box, class_id, score in zip(*_fields(one.above(0.05)), strict=True):
                    boxes, ids, scores = _fields(other.above(0.01))
                    near = (np.abs(boxes - box).max(axis=1, initial=0) <= 1e-3) & (ids == class_id)
                    assert (np.abs(scores[near] - score) <= 1e-4).any(), (image.name, box, score)
            total += len(a.above(0.05))
        assert total > 0, "the comparison saw no box"


def _fields(found: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [N, 4], class ids, scores) of a Detections."""
    return (
        np.asarray(found.boxes, float).reshape(-1, 4),  # type: ignore[attr-defined]
        np.asarray(found.class_ids),  # type: ignore[attr-defined]
        np.asarray(found.scores, float),  # type: ignore[attr-defined]
    )


class Masks(Family):
    """Kaggle Dice recomputed from the Severstal submission `predict` writes."""

    keys = ("test/dice", "test/dice_defective")

    def metrics_from_predict(self, run: Trained, out: Path) -> dict[str, float]:
        from defects.bundle import load_bundle
        from defects.cli import predict
        from defects.data.segmentation import SegmentationDataModule
        from defects.formats.severstal import read_severstal_csv, rle_decode
        from defects.metrics.segmentation import SeverstalDice

        names = list(load_bundle(run.bundle)["class_names"])
        csv = predict(str(run.bundle), str(run.data / "test" / "images"), str(out / "pred"))
        datamodule = SegmentationDataModule(str(run.data), names, shape=list(STEEL_SHAPE))
        table = read_severstal_csv(Path(csv), len(names), shape=STEEL_SHAPE)
        dice = SeverstalDice(names)
        written = 0
        for sample in datamodule.eval_samples("test"):
            rles = table.get(sample.image.name, {})
            written += len(rles)
            pred = np.stack(
                [
                    rle_decode(rles[k], STEEL_SHAPE) if k in rles else np.zeros(STEEL_SHAPE, bool)
                    for k in range(1, len(names) + 1)
                ]
            )
            truth = torch.from_numpy(datamodule.truth(sample))[None]
            dice.update(torch.from_numpy(pred)[None], truth)
        assert written > 0, "predict wrote no mask"
        values = dice.compute()
        return {f"test/{k}": float(values[k]) for k in ("dice", "dice_defective")}

    def assert_same(self, eager: object, onnx: object, images: list[Path]) -> None:
        """Identical masks after thresholds, every strip segmented (gate 0), gates to 1e-4."""
        for predictor in (eager, onnx):
            predictor.set_threshold(0.0)  # type: ignore[attr-defined]
        pairs = zip(eager.predict_batch(images), onnx.predict_batch(images), strict=True)  # type: ignore[attr-defined]
        shown = 0
        for a, b in pairs:
            assert np.array_equal(a.masks, b.masks)
            assert a.gate == pytest.approx(b.gate, abs=1e-4)
            shown += int(a.masks.any())
        assert shown > 0, "the comparison saw no mask"


# ------------------------------------------------------------------ the kinds
STEEL_SHAPE = (64, 320)


def _weld_data(root: Path) -> None:
    from defects.data.synthetic import generate_weld_dataset

    generate_weld_dataset(
        root,
        n_train=IMAGES,
        n_valid=0,
        n_test=0,
        width=128,
        height=96,
        seed=3,
        defect_free_fraction=0.0,
    )


def _steel_data(root: Path) -> None:
    from defects.data.synthetic import generate_steel_dataset

    generate_steel_dataset(
        root,
        n_train=IMAGES,
        n_valid=0,
        n_test=0,
        width=STEEL_SHAPE[1],
        height=STEEL_SHAPE[0],
        seed=5,
        defect_free_fraction=0.25,
    )


def winding_frames(root: Path, held_out: int = 0) -> Path:
    """One video of twelve frames, every third kept: four training frames; `held_out` videos
    each for valid and test."""
    from defects.data.synthetic import generate_winding_dataset

    generate_winding_dataset(
        root,
        n_train=1,
        n_valid=held_out,
        n_test=held_out,
        frames_per_video=12,
        every_k=3,
        width=160,
        height=120,
        seed=3,
        defect_free_fraction=0.0,
        max_defects=3,
    )
    return root


def winding_overrides(root: Path, out: Path) -> list[str]:
    return [
        "task=winding",
        "logger=none",
        f"paths.data_dir={root}",
        *(f"paths.{k}={out / k}" for k in ("model_dir", "metrics_dir", "plots_dir")),
    ]


# Thresholds from measured runs (seeds 42, 1-5, one thread). Weld: loss ratio 0.016-0.030,
# mAP50 1.0, recall 1.0. Steel: ratio 0.14-0.20, dice_defective 0.86-0.97, gate AUROC 1.0.
# YOLO: 60 epochs of one batch, loss 17 -> 1.2, mAP50 1.0. Broken on purpose (not
# committed): zero gradients leave the loss flat (ratio 1.0) and score weld mAP50 0.0, steel
# dice_defective 0.12; a "constant x params" loss or wrong targets (labels shifted a class,
# empty masks) make the loss fall as much or more, and score mAP50 0.0-0.03,
# dice_defective 0.10-0.14; no gate loss keeps dice_defective 0.97 but gate AUROC 0.67.
# Steel's val/dice is no use here: empty-empty pairs score 1, so an untrained model gets 0.83.
def _weld_learned(losses: list[float], metrics: dict[str, float]) -> None:
    assert fell(losses, 0.2), losses
    assert metrics["val/mAP50"] > 0.7 and metrics["val/recall"] > 0.7, metrics


def _steel_learned(losses: list[float], metrics: dict[str, float]) -> None:
    assert fell(losses, 0.4), losses
    assert metrics["val/dice_defective"] > 0.7, metrics
    # One defect-free image among four: AUROC is 0, 1/3, 2/3 or 1, and only 1 passes.
    assert metrics["val/gate_auroc"] > 0.9, metrics


def _yolo_learned(losses: list[float], metrics: dict[str, float]) -> None:
    assert fell(losses, 0.2), losses
    assert metrics["val/mAP50"] >= 0.9, metrics


CONTRACTS: dict[str, Contract] = {
    "fasterrcnn": Contract(
        _weld_data,
        weld_overrides,
        ["model.net.min_size=96", "model.net.max_size=128"],
        _weld_learned,
        Boxes(),
    ),
    "gated": Contract(
        _steel_data,
        steel_overrides,
        ["data.crop=null", f"data.shape=[{STEEL_SHAPE[0]},{STEEL_SHAPE[1]}]"],
        _steel_learned,
        Masks(),
    ),
    "yolo": Contract(
        winding_frames,
        winding_overrides,
        [
            "model.imgsz=160",
            "optimizer.lr=0.01",
            "model.nominal_batch=4",
            "model.warmup.warmup_epochs=0",
            "model.warmup.warmup_min_iters=5",
            "model.ema_tau=10",
            "model.norm_momentum=0.3",
            "trainer.max_epochs=60",
        ],
        _yolo_learned,
        Boxes(),
    ),
}
