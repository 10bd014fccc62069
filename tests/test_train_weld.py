"""The weld task end to end on tiny data: train, resume, bundle, predictor, evaluate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import defects
from defects.bundle import load_bundle
from defects.data.detection import DetectionDataModule
from defects.evaluate import evaluate
from defects.train import train
from tests.conftest import assert_png, compose_config, report_metrics, weld_overrides

CLASSES = ["porosity", "crack", "lack_of_fusion", "slag_inclusion"]
# train.json / eval.json group per-class numbers under these keys (JSON key -> metric group).
NEST = {
    "AP": "AP",
    "AP50": "AP50",
    "precision_per_class": "precision",
    "recall_per_class": "recall",
}
MONITOR = "val/mAP"  # model/fasterrcnn.yaml


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics as the reports write them (6 decimals)."""
    return {key: round(float(value), 6) for key, value in metrics.items()}


def assert_scores(metrics: dict[str, float]) -> None:
    """Every number a detection report holds is a rate: finite and in [0, 1]."""
    bad = {k: v for k, v in metrics.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)}
    assert not bad, f"not a finite score in [0, 1]: {bad}"


def test_fast_dev_run_writes_nothing(weld_cfg, tmp_path: Path) -> None:
    metrics = train(weld_cfg("trainer.fast_dev_run=true"))
    assert math.isfinite(metrics["train/loss"])
    assert not (tmp_path / "model_dir" / "bundle.pt").exists()


def test_bf16_mixed_precision_step(weld_cfg) -> None:
    metrics = train(weld_cfg("trainer.fast_dev_run=true", "trainer.precision=bf16-mixed"))
    assert math.isfinite(metrics["train/loss"])


def test_defect_free_images_train(weld_root: Path, weld_cfg, tmp_path: Path) -> None:
    """Images whose label file is missing or empty are normal training images."""
    root = tmp_path / "clean"
    shutil.copytree(weld_root, root)
    for k, label in enumerate(sorted((root / "train" / "labels").glob("*.txt"))):
        label.unlink() if k % 2 else label.write_text("")
    dm = DetectionDataModule(str(root), CLASSES)
    dm.setup("fit")
    assert all(len(s.labels) == 0 for s in dm.datasets["train"].samples)
    metrics = train(weld_cfg("trainer.fast_dev_run=true", data_root=root))
    assert math.isfinite(metrics["train/loss"])


@pytest.fixture(scope="module")
def trained(weld_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny epochs, then a resumed third: shared by the tests below."""
    out = tmp_path_factory.mktemp("run")
    base = weld_overrides(weld_root, out)
    metrics = train(compose_config(base))
    history_before = json.loads((out / "metrics_dir" / "history.json").read_text())
    resumed = train(compose_config([*base, "ckpt_path=last", "trainer.max_epochs=3"]))
    return {
        "out": out,
        "base": base,
        "metrics": metrics,
        "resumed": resumed,
        "history_before": history_before,
    }


def test_training_writes_bundle_history_and_plots(trained: dict) -> None:
    out = trained["out"]
    assert {"val/mAP", "val/mAP50", "val/mAP50-95"} <= set(trained["metrics"])
    assert [r["epoch"] for r in trained["history_before"]] == [0, 1]
    assert all("val/mAP50" in r and "train/loss" in r for r in trained["history_before"])
    assert (out / "plots_dir" / "val_pr_curve.csv").stat().st_size > 0
    for figure in ("pr_curve", "predictions", "per_class", "thresholds", "confusion_matrix"):
        assert_png(out / "plots_dir" / f"val_{figure}.png", 250)
    assert (out / "model_dir" / "checkpoints" / "last.ckpt").exists()


def test_train_report_is_what_the_run_returned(trained: dict) -> None:
    """train.json (on disk after the resumed run), the bundle's metrics and what `train`
    returned are one validation report: same keys, same numbers (rounded as written). The
    monitored metric is returned as the best checkpoint's score, the best epoch of history."""
    out, returned = trained["out"], trained["resumed"]
    stored = load_bundle(out / "model_dir" / "bundle.pt")["metrics"]
    assert {"val/mAP", "val/mAP50", "val/mAP50-95", "val/precision", "val/f1"} <= set(stored)
    assert_scores(stored)
    written = report_metrics(out / "metrics_dir" / "train.json", "val", NEST)
    assert written == rounded(stored)
    assert {k: v for k, v in returned.items() if k != MONITOR} == {
        k: v for k, v in stored.items() if k != MONITOR
    }
    history = json.loads((out / "metrics_dir" / "history.json").read_text())
    best = max(record[MONITOR] for record in history)
    assert returned[MONITOR] == pytest.approx(best, abs=1e-6)  # history rounds to 6 places


def test_resume_continues_from_last(trained: dict) -> None:
    history = json.loads((trained["out"] / "metrics_dir" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert history[2]["step"] > history[1]["step"]


def test_checkpoint_holds_plain_values_only(trained: dict) -> None:
    ckpt = trained["out"] / "model_dir" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["class_names"] == CLASSES


def test_bundle_predictor_matches_the_model(trained: dict, weld_root: Path) -> None:
    bundle_path = trained["out"] / "model_dir" / "bundle.pt"
    bundle = load_bundle(bundle_path)
    from defects.kinds.detection.evaluate import SCORE_GRID

    # The score threshold is tuned on validation F1, from the grid; the bundle keeps the curve.
    assert bundle["class_names"] == CLASSES and bundle["thresholds"]["score"] in SCORE_GRID
    (curve,) = bundle["tuning"]
    assert curve["x"] == list(SCORE_GRID) and curve["chosen"] == bundle["thresholds"]["score"]
    f1 = curve["series"]["F1"]
    assert f1[curve["x"].index(curve["chosen"])] == max(f1)
    predictor = defects.load(bundle_path)
    predictor.set_threshold(0.0)
    image = sorted((weld_root / "test" / "images").glob("*.png"))[0]
    detections = predictor.predict(image)
    assert detections.boxes.shape == (len(detections), 4)
    assert set(detections.labels) <= set(CLASSES)
    # One inference path: the predictor's output is the detector's forward on the same pixels.
    from defects.data.images import read_image
    from defects.data.transforms import to_tensor
    from defects.kinds import get_kind

    detector = get_kind(bundle["model"]["kind"]).network(bundle)
    with torch.inference_mode():
        direct = detector([to_tensor(read_image(image, predictor.channels))])[0]
    np.testing.assert_allclose(detections.scores, direct["scores"].numpy(), rtol=1e-5)


def test_load_rejects_a_foreign_file(tmp_path: Path) -> None:
    from defects.formats.errors import FormatError

    bad = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(FormatError, match="model.pt: not a defects model bundle"):
        defects.load(bad)


@pytest.mark.parametrize("model_file", ["bundle.pt", "checkpoints/last.ckpt"])
def test_evaluate_writes_metrics_and_plot_data(trained: dict, model_file: str) -> None:
    out = trained["out"]
    metrics = evaluate(
        compose_config([*trained["base"], f"ckpt_path={out / 'model_dir' / model_file}"])
    )
    assert {"test/mAP", "test/mAP50", "test/mAP50-95", "test/recall"} <= set(metrics)
    assert_scores(metrics)
    # eval.json is the returned report, every key, rounded as written.
    assert report_metrics(out / "metrics_dir" / "eval.json", "test", NEST) == rounded(metrics)
    header = (out / "plots_dir" / "test_pr_curve.csv").read_text().splitlines()[0]
    assert header == "class,recall,precision"
    for figure in ("pr_curve", "predictions", "per_class", "thresholds", "confusion_matrix"):
        assert_png(out / "plots_dir" / f"test_{figure}.png", 250)


def test_onnx_export_matches_eager_detections(trained: dict, weld_root: Path, tmp_path: Path):
    """`defects export` -> `defects.load(folder)`: same detections as the eager bundle on the
    same images, boxes within 1e-3 px and scores within 1e-4."""
    from defects.cli import export
    from defects.parity import max_differences

    bundle = trained["out"] / "model_dir" / "bundle.pt"
    folder = Path(export(str(bundle), output=str(tmp_path / "onnx")))
    eager, onnx = defects.load(bundle), defects.load(folder)
    assert onnx.backend == "onnx" and onnx.class_names == eager.class_names
    total = 0
    for image in sorted((weld_root / "test" / "images").glob("*.png")):
        a, b = eager.detect_all([image])[0], onnx.detect_all([image])[0]
        box, score = max_differences(a, b)  # paired one to one: NMS order is free
        assert box <= 1e-3 and score <= 1e-4, (image.name, box, score)
        total += len(a)
    assert total > 0  # the comparison saw real boxes
