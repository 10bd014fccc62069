"""What used to fall back silently is now an error that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

import defects
from defects.bundle import save_bundle
from defects.kinds.gated.net import Segmenter
from defects.runtime import MissingMetricError, TrainingError, metric_value
from defects.train import train
from tests.test_predict_segmentation import CLASS_NAMES, KWARGS


def test_a_bundle_without_thresholds_is_refused(tmp_path: Path) -> None:
    bundle = save_bundle(
        tmp_path / "b.pt",
        task="steel",
        model={"kind": "gated_segmentation", "kwargs": KWARGS},
        state_dict=Segmenter(**KWARGS).state_dict(),
        class_names=CLASS_NAMES,
        thresholds={"pixel": 0.5},
        input={"channels": 1},
    )
    with pytest.raises(ValueError, match="thresholds lack 'gate'"):
        defects.load(bundle)


def test_a_bundle_without_input_channels_is_refused(tmp_path: Path) -> None:
    bundle = save_bundle(
        tmp_path / "b.pt",
        task="steel",
        model={"kind": "gated_segmentation", "kwargs": KWARGS},
        state_dict=Segmenter(**KWARGS).state_dict(),
        class_names=CLASS_NAMES,
        thresholds={"gate": 0.5, "pixel": 0.5, "min_area": 0},
        input={},
    )
    with pytest.raises(ValueError, match="lacks 'channels'"):
        defects.load(bundle)


def test_a_missing_monitored_metric_is_an_error_not_zero() -> None:
    assert metric_value({"val/mAP": 0.25}, "val/mAP") == 0.25
    with pytest.raises(MissingMetricError, match="'val/dice' was not produced"):
        metric_value({"val/mAP": 0.25}, "val/dice")


def test_no_best_checkpoint_is_an_error(weld_cfg) -> None:
    """Without a validation pass there is no best model; the last one is not silently used."""
    with pytest.raises(TrainingError, match="no best checkpoint"):
        train(weld_cfg("trainer.limit_val_batches=0", "trainer.max_epochs=1"))
