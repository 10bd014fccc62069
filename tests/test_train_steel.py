"""The steel task end to end on tiny strips: every design trains, tunes, bundles, evaluates."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch

import defects
from defects.bundle import load_bundle
from defects.evaluate import evaluate
from defects.formats.severstal import read_severstal_csv, rle_decode
from defects.kinds.gated.net import ARCHS
from defects.kinds.gated.predictor import SegmentationPredictor
from defects.train import train
from tests.conftest import assert_png, compose_config, report_metrics, steel_overrides

CLASSES = ["pits", "inclusion", "scratches", "patches"]
# train.json's per-class groups -> metric groups
NEST = {"dice_per_class": "dice", "iou_per_class": "iou"}
# The graphs each design's gated flow runs (and ONNX exports).
PARTS = {
    "separate": {"gate", "segment"},
    "two_heads": {"segment"},
    "shared_backbone": {"encode", "decode"},
}


class Probe(L.Callback):
    """What a run really trained: the module, its weights before the first step, and the
    shapes of the batches it saw. A fast_dev_run returns only metrics; this lets its test
    check that an override reached the network without another run."""

    def __init__(self) -> None:
        self.module: L.LightningModule | None = None
        self.before: dict[str, torch.Tensor] = {}
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module = pl_module
        self.before = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batches.append((batch[0].detach().clone(), batch[1].detach().clone()))

    def changed(self, prefix: str) -> bool:
        """Some parameter under `prefix` moved since fitting began: the loss reached it (a
        parameter without a gradient is skipped by the optimizer; buffers such as BatchNorm
        statistics, which move on any forward pass, are not compared)."""
        after = dict(self.module.named_parameters())
        return any(
            not torch.equal(after[k], v) for k, v in self.before.items() if k.startswith(prefix)
        )


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Probe:
    """A Probe added to the callbacks `defects.train` builds from the config."""
    entry = importlib.import_module("defects.train")  # the module, not the function
    probe, make = Probe(), entry.make_callbacks
    monkeypatch.setattr(entry, "make_callbacks", lambda cfg: [*make(cfg), probe])
    return probe


@pytest.mark.parametrize("design", ["separate", "two_heads", "shared_backbone"])
@pytest.mark.parametrize("arch", ["unet", "linknet"])
def test_fast_dev_run_every_design(
    steel_root: Path, tmp_path: Path, probe: Probe, design: str, arch: str
) -> None:
    """Each design x arch trains one step and validates: the network is the one asked for,
    the loss is the configured sum of its terms, and one step moved every part the design
    trains (the gate: its own network in `separate`, the smp aux head otherwise)."""
    overrides = steel_overrides(steel_root, tmp_path)
    cfg = compose_config(
        [
            *overrides,
            f"model.design={design}",
            f"model.net.arch={arch}",
            "trainer.fast_dev_run=true",
        ]
    )
    metrics = train(cfg)
    net = probe.module.net
    assert type(net.model) is ARCHS[arch] and net.design == design
    assert set(net.parts()) == PARTS[design]
    assert (
        (net.gate is None) == (net.model.classification_head is not None) == (design != "separate")
    )
    assert len(probe.batches) == 1  # fast_dev_run: one training batch
    hp = cfg.model
    terms = metrics["train/bce"] + hp.dice_weight * metrics["train/dice"]
    assert metrics["train/loss"] == pytest.approx(terms + hp.gate_weight * metrics["train/gate"])
    assert math.isfinite(metrics["train/loss"]) and metrics["train/gate"] > 0
    assert probe.changed("net.model.encoder.") and probe.changed("net.model.segmentation_head.")
    gate = "net.gate." if design == "separate" else "net.model.classification_head."
    assert probe.changed(gate), f"{design}: the gate loss never reached {gate}"
    assert 0.0 <= metrics["val/dice"] <= 1.0 and 0.0 <= metrics["val/seg_dice"] <= 1.0
    assert not (tmp_path / "model_dir" / "bundle.pt").exists()


def test_mask_folder_layout_trains_by_config(tmp_path: Path, probe: Probe) -> None:
    """Mixed-size images with index masks (the magnetic-tile path) train via data.* alone:
    the batches are resized to data.resize, the masks carry class_names' two channels, and
    the network is built for those two classes."""
    from tests.test_segmentation_data import masks_dataset

    root = masks_dataset(tmp_path / "tiles", [(40, 60), (50, 50), (33, 70), (64, 64)])
    overrides = [o for o in steel_overrides(root, tmp_path) if not o.startswith("data.")]
    cfg = compose_config(
        [
            *overrides,
            "data.layout=masks",
            "data.resize=[64,64]",
            "data.crop=null",
            "data.batch_size=2",
            "class_names=[a,b]",
            "trainer.fast_dev_run=true",
        ]
    )
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    assert probe.module.class_names == ["a", "b"] and probe.module.net.num_classes == 2
    ((images, masks),) = probe.batches
    assert images.shape == (2, 1, 64, 64) and masks.shape == (2, 2, 64, 64)
    assert probe.changed("net.")


@pytest.fixture(scope="module")
def trained(steel_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("steel_run")
    base = steel_overrides(steel_root, out)
    metrics = train(compose_config([*base, "model.design=shared_backbone"]))
    return {"out": out, "base": base, "metrics": metrics}


def test_train_tunes_thresholds_into_bundle(trained: dict) -> None:
    out = trained["out"]
    bundle = load_bundle(out / "model_dir" / "bundle.pt")
    assert bundle["model"]["kind"] == "gated"  # the folder names the kind (kinds/gated)
    assert bundle["class_names"] == CLASSES
    thresholds = bundle["thresholds"]
    assert set(thresholds) == {"gate", "pixel", "min_area"}
    assert len(thresholds["pixel"]) == len(thresholds["min_area"]) == 4
    report = json.loads((out / "metrics_dir" / "train.json").read_text())
    assert report["thresholds"] == thresholds
    assert 0.0 <= report["dice"] <= 1.0 and set(report["dice_per_class"]) == set(CLASSES)
    # train.json is the validation report stored in the bundle, every key, rounded as written.
    written = report_metrics(out / "metrics_dir" / "train.json", "val", NEST, ["thresholds"])
    assert written == {k: round(v, 6) for k, v in bundle["metrics"].items()}
    assert (out / "plots_dir" / "val_pr_curve.csv").stat().st_size > 0
    for figure in ("pr_curve", "predictions", "per_class", "thresholds"):
        assert_png(out / "plots_dir" / f"val_{figure}.png", 250)
    # what the search chose from: the gate, then per class the pixel threshold and min area
    tuning = bundle["tuning"]
    assert [c["parameter"] for c in tuning[:3]] == [
        "gate threshold",
        "pixel threshold",
        "min area (px)",
    ]
    assert [c["group"] for c in tuning[1::2]] == CLASSES and len(tuning) == 1 + 2 * len(CLASSES)
    assert tuning[0]["chosen"] == pytest.approx(thresholds["gate"], abs=1e-6)
    assert [c["chosen"] for c in tuning[1::2]] == pytest.approx(thresholds["pixel"])
    assert [c["chosen"] for c in tuning[2::2]] == thresholds["min_area"]
    history = json.loads((out / "metrics_dir" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [0, 1] and "val/dice" in history[-1]
    assert 0 < history[0]["elapsed_s"] <= history[1]["elapsed_s"]  # wall time per epoch


def test_evaluate_bundle_and_checkpoint_agree(trained: dict, steel_root: Path) -> None:
    """The bundle is the best checkpoint's weights with thresholds tuned on validation; a
    `.ckpt` given to evaluate is tuned the same way there. So the best checkpoint of the run
    evaluates to the bundle's numbers and thresholds, exactly."""
    out = trained["out"]
    metrics = evaluate(
        compose_config([*trained["base"], f"ckpt_path={out / 'model_dir' / 'bundle.pt'}"])
    )
    assert {"test/dice", "test/dice_defective", "test/gate_f1"} <= set(metrics)
    for figure in ("pr_curve", "predictions", "per_class", "thresholds"):
        assert_png(out / "plots_dir" / f"test_{figure}.png", 250)
    report = json.loads((out / "metrics_dir" / "eval.json").read_text())
    assert report["dice"] == pytest.approx(metrics["test/dice"], abs=1e-6)
    assert report["thresholds"] == load_bundle(out / "model_dir" / "bundle.pt")["thresholds"]
    (ckpt,) = (out / "model_dir" / "checkpoints").glob("epoch*.ckpt")  # save_top_k=1: the best
    from_ckpt = evaluate(compose_config([*trained["base"], f"ckpt_path={ckpt}"]))
    assert from_ckpt == metrics
    assert json.loads((out / "metrics_dir" / "eval.json").read_text()) == report


def test_evaluate_refuses_a_detector_bundle(trained: dict, tmp_path: Path) -> None:
    from defects.bundle import save_bundle
    from defects.config import ConfigError

    fake = save_bundle(
        tmp_path / "det.pt",
        task="weld",
        model={"kind": "detector", "kwargs": {}},
        state_dict={},
        class_names=CLASSES,
        thresholds={},
        input={},
    )
    with pytest.raises(ConfigError, match="holds a fasterrcnn model"):
        evaluate(compose_config([*trained["base"], f"ckpt_path={fake}"]))


def test_predictor_matches_the_evaluated_flow(trained: dict, steel_root: Path) -> None:
    """defects.load gives the same masks as thresholds applied to the network by hand."""
    from defects.kinds.gated.thresholds import Thresholds, binarize

    predictor = defects.load(trained["out"] / "model_dir" / "bundle.pt")
    assert isinstance(predictor, SegmentationPredictor)
    images = sorted((steel_root / "test" / "images").glob("*.png"))
    results = predictor.predict_batch(images)
    assert [r.masks.shape for r in results] == [(4, 64, 320)] * len(images)
    from defects.data.images import read_image

    batch = torch.stack([torch.from_numpy(read_image(p)).float()[None] / 255 for p in images])
    gate, probs = predictor.flow(batch, predictor.tuned.gate)
    expected = binarize(gate, probs, predictor.tuned).numpy()
    assert np.array_equal(np.stack([r.masks for r in results]), expected)
    assert isinstance(
        Thresholds.from_dict(
            load_bundle(trained["out"] / "model_dir" / "bundle.pt")["thresholds"], 4
        ),
        Thresholds,
    )


def test_truth_masks_reach_the_metric(steel_root: Path) -> None:
    """The loader's masks are exactly the CSV's RLE masks (no shift, no class mix-up)."""
    from defects.data.segmentation import SegmentationDataModule

    dm = SegmentationDataModule(str(steel_root), CLASSES, shape=[64, 320], num_workers=0)
    table = read_severstal_csv(steel_root / "valid" / "train.csv", 4, shape=(64, 320))
    images, masks = next(iter(dm.val_dataloader()))
    samples = dm.split_samples("valid")
    for k, sample in enumerate(samples[: len(images)]):
        for class_id in range(1, 5):
            rle = table.get(sample.image.name, {}).get(class_id)
            truth = rle_decode(rle, (64, 320)) if rle else np.zeros((64, 320), bool)
            assert np.array_equal(masks[k, class_id - 1].numpy().astype(bool), truth)


def test_bundle_refuses_values_weights_only_cannot_read(tmp_path: Path) -> None:
    """An OmegaConf list (e.g. data.resize passed through) would make an unreadable bundle."""
    from omegaconf import ListConfig

    from defects.bundle import save_bundle

    with pytest.raises(TypeError, match=r"bundle.input.resize: ListConfig"):
        save_bundle(
            tmp_path / "b.pt",
            task="steel",
            model={},
            state_dict={},
            class_names=[],
            thresholds={},
            input={"resize": ListConfig([224, 224])},
        )
    assert not (tmp_path / "b.pt").exists()


def test_onnx_export_gives_the_same_masks(trained: dict, steel_root: Path, tmp_path: Path):
    """`defects export` + `defects.load(folder)`: the same predictor interface on ONNX Runtime,
    masks identical after thresholds; `backend="onnx"` on the bundle does the same."""
    from defects.cli import export

    bundle = trained["out"] / "model_dir" / "bundle.pt"
    folder = Path(export(str(bundle), output=str(tmp_path / "onnx")))
    assert (folder / "export.json").is_file() and list(folder.glob("*.onnx"))
    eager, onnx = defects.load(bundle), defects.load(folder)
    assert (eager.backend, onnx.backend) == ("eager", "onnx")
    eager.set_threshold(0.0)  # segment every strip, so masks are compared, not only the gate
    onnx.set_threshold(0.0)
    images = sorted((steel_root / "test" / "images").glob("*.png"))
    for a, b in zip(eager.predict_batch(images), onnx.predict_batch(images), strict=True):
        assert np.array_equal(a.masks, b.masks)
        assert a.gate == pytest.approx(b.gate, abs=1e-4)
    on_the_fly = defects.load(bundle, backend="onnx")
    assert on_the_fly.backend == "onnx"
    fresh = defects.load(bundle)  # the bundle's own thresholds on both
    for path in images[:2]:
        assert np.array_equal(on_the_fly.predict(path).masks, fresh.predict(path).masks)
