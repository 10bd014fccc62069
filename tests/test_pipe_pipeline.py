"""The pipe task's stages end to end on tiny frames: import -> clean -> layouts -> baselines ->
refine -> final -> evaluate, every model tracked under one MLflow parent run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defects.bundle import load_bundle
from defects.config import ConfigError, validate_config
from defects.data.images import list_images
from defects.data.synthetic import generate_pipe_dataset
from defects.formats.mask_folder import read_index_mask
from defects.formats.yolo import read_class_names, read_yolo_labels
from defects.pipe.coarse import box_pixels
from defects.pipe.layout import read_fine
from defects.pipe.refine import crop_image, crop_window
from defects.pipe.stages import STAGES, PipePaths, run_stage
from defects.runtime import run_entry
from tests.conftest import TINY_SEGMENTER, assert_png, compose_config, torch_threads

ROOT = Path(__file__).resolve().parents[1]
TINY_PIPE = dict(
    n_train=14,
    n_valid=4,
    n_test=4,
    width=128,
    height=128,
    rare_fraction=0.1,
    n_duplicates=2,
    n_false_boxes=3,
    fine_per_class=1,
    seed=1,
)
MODELS = ("baseline", "final", "box", "oracle")


def pipe_overrides(raw: Path, out: Path) -> list[str]:
    """A tiny pipe run: 2 short epochs, a small Unet, every output under ``out``."""
    return [
        "task=pipe",
        "debug=tiny",
        *TINY_SEGMENTER,
        "data.batch_size=2",
        "pipe.clean.min_count=2",  # 14 frames: a few boxes per class
        "pipe.baseline.trainer.max_epochs=2",
        f"paths.data_dir={raw}",
        f"pipe.work_dir={out / 'work'}",
        *(f"paths.{key}={out / key}" for key in ("model_dir", "metrics_dir", "plots_dir")),
        f"logger.tracking_uri=sqlite:///{out / 'mlruns.db'}",
        f"logger.artifact_location={out / 'mlartifacts'}",
    ]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:

    out = tmp_path_factory.mktemp("pipe_run")
    raw = out / "raw"
    generate_pipe_dataset(raw, **TINY_PIPE)
    before = _digest(raw)
    cfg = compose_config(pipe_overrides(raw, out))
    with torch_threads(1):
        results = {stage: run_stage(cfg, stage) for stage in STAGES}
    return {
        "cfg": cfg,
        "out": out,
        "raw": raw,
        "raw_before": before,
        "paths": PipePaths.from_cfg(cfg),
        "results": results,
    }


def test_config_composes_and_validates() -> None:
    cfg = compose_config(["task=pipe"])
    validate_config(cfg)
    assert cfg.data.layout == "masks" and cfg.data.channels == 3
    assert cfg.prepare._target_.endswith("generate_pipe_dataset")
    assert list(cfg.prepare.class_names) == list(cfg.class_names)
    assert cfg.model._target_.endswith("SegmentationModule")
    assert dict(cfg.pipe.models) == {
        "baseline": "fine",
        "final": "refined",
        "box": "box",
        "oracle": "oracle",
    }
    with pytest.raises(ConfigError, match="unknown pipe stage"):
        run_stage(cfg, "polish")


def test_raw_data_is_only_read_and_import_copies_it(pipeline: dict) -> None:
    p: PipePaths = pipeline["paths"]
    assert _digest(pipeline["raw"]) == pipeline["raw_before"]
    assert _digest(p.imported) == pipeline["raw_before"]
    with pytest.raises(ValueError, match="outside"):
        cfg = compose_config(
            [*pipe_overrides(pipeline["raw"], pipeline["out"]), f"pipe.work_dir={pipeline['raw']}"]
        )
        run_stage(cfg, "import")


def test_clean_writes_report_and_coarse_masks_of_kept_boxes(pipeline: dict) -> None:
    p: PipePaths = pipeline["paths"]
    report = json.loads((p.clean / "report.json").read_text())
    planted = json.loads((pipeline["raw"] / "planted.json").read_text())
    rules = {r["rule"] for r in report["removals"]}
    assert {"exact_duplicate", "conflicting_labels", "degenerate_box"} <= rules
    assert len(planted["false_boxes"]) == 3
    names = read_class_names(p.clean / "data.yaml")
    assert names == report["classes"]["after"] == p.class_names()
    summary = json.loads((p.metrics_dir / "clean.json").read_text())
    for split in ("train", "valid", "test"):
        stems = [i.stem for i in list_images(p.clean / split / "images")]
        assert summary["coarse_masks"][split] == len(stems) > 0
        for stem in stems:
            coarse = read_index_mask(p.clean / split / "coarse_masks" / f"{stem}.png", len(names))
            boxes = read_yolo_labels(p.clean / split / "labels" / f"{stem}.txt", len(names))
            expected = np.zeros_like(coarse, bool)
            for box in boxes:
                x1, y1, x2, y2 = box_pixels(box, coarse.shape[1], coarse.shape[0])
                expected[y1:y2, x1:x2] = True
            assert np.array_equal(coarse > 0, expected), f"{split}/{stem}"


def test_layouts_take_the_right_masks(pipeline: dict) -> None:
    p: PipePaths = pipeline["paths"]
    names = p.class_names()
    fine = set(read_fine(p.clean))
    train = [i.stem for i in list_images(p.clean / "train" / "images")]
    assert fine and fine < set(train)

    def mask(root: Path, split: str, folder: str, stem: str) -> np.ndarray:
        return read_index_mask(root / split / folder / f"{stem}.png", len(names))

    expected_train = {
        "fine": {s: "true_masks" for s in sorted(fine)},
        "box": {s: "coarse_masks" for s in train},
        "oracle": {s: "true_masks" for s in train},
        "refined": {s: "true_masks" if s in fine else "refined_masks" for s in train},
    }
    for variant, sources in expected_train.items():
        layout = p.layout(variant)
        assert (layout / "classes.txt").read_text().split() == names
        assert [i.stem for i in list_images(layout / "train" / "images")] == sorted(sources)
        for stem, folder in sources.items():
            got = mask(layout, "train", "masks", stem)
            truth = mask(p.mask_root(folder), "train", folder, stem)
            assert np.array_equal(got, truth), (variant, stem)
        for split in ("valid", "test"):
            for image in list_images(p.clean / split / "images"):
                got = mask(layout, split, "masks", image.stem)
                assert np.array_equal(got, mask(p.clean, split, "true_masks", image.stem))
    for k, name in enumerate(names):  # the baselines' box crops, fine boxes only in train
        layout = p.crops(name)
        assert (layout / "classes.txt").read_text().split() == [name]
        for split in ("train", "valid", "test"):
            expected = {}
            for image in list_images(p.clean / split / "images"):
                if split == "train" and image.stem not in fine:
                    continue
                boxes = read_yolo_labels(p.clean / split / "labels" / f"{image.stem}.txt", 4)
                truth = mask(p.clean, split, "true_masks", image.stem) == k + 1
                for line, box in enumerate(boxes, 1):
                    if box.class_id == k:
                        rect = box_pixels(box, truth.shape[1], truth.shape[0])
                        window = crop_window(rect, truth.shape[1], truth.shape[0], 0.25)
                        expected[f"{image.stem}_{line}"] = crop_image(
                            truth.astype(np.uint8), window, 64, nearest=True
                        )
            got = [i.stem for i in list_images(layout / split / "images")]
            assert got == sorted(expected), (name, split)
            for stem, crop in expected.items():
                binary = read_index_mask(layout / split / "masks" / f"{stem}.png", 1)
                assert np.array_equal(binary, crop), (name, split, stem)
        assert list_images(layout / "train" / "images"), name


def test_every_model_is_a_whole_bundle(pipeline: dict) -> None:
    p: PipePaths = pipeline["paths"]
    names = p.class_names()
    for name in names:
        bundle = load_bundle(p.baseline(name) / "bundle.pt")
        assert bundle["class_names"] == [name] and bundle["task"] == "pipe"
    for model in MODELS:
        bundle = load_bundle(p.model(model) / "bundle.pt")
        assert bundle["class_names"] == names and bundle["input"]["channels"] == 3
        assert bundle["output"] == {"exclusive": True}  # one class per pixel
        assert (p.metrics_dir / "segmenters" / model / "train.json").is_file()
        for figure in ("predictions", "per_class", "thresholds"):  # the folder dvc plots shows
            assert_png(p.plots_dir / "segmenters" / model / f"val_{figure}.png", 250)
    assert set(pipeline["results"]["final"]) == set(MODELS)


def test_final_model_serves_through_the_steel_predictor_and_onnx(
    pipeline: dict, tmp_path: Path
) -> None:
    """The final model is a gated bundle: `defects.load`, its ONNX export and the web app's
    predictor give the same one-class-per-pixel masks."""
    import defects
    from defects.export import export_bundle
    from defects.serve import create_app

    p: PipePaths = pipeline["paths"]
    bundle = p.model("final") / "bundle.pt"
    eager = defects.load(bundle)
    onnx = defects.load(export_bundle(bundle, tmp_path / "onnx"))
    assert onnx.backend == "onnx" and onnx.exclusive and eager.exclusive
    images = list_images(p.clean / "test" / "images")
    for a, b in zip(eager.predict_batch(images), onnx.predict_batch(images), strict=True):
        assert np.array_equal(a.masks, b.masks)
        assert a.masks.sum(axis=0).max() <= 1  # exclusive: never two classes on one pixel
    client = create_app(eager).test_client()
    with images[0].open("rb") as handle:
        reply = client.post(
            "/api/predict",
            data={"image": (handle, images[0].name)},
            content_type="multipart/form-data",
        )
    assert reply.status_code == 200, reply.data[:300]
    assert reply.get_json() == {"image": images[0].name, **eager.predict(images[0]).record()}


def test_refined_and_grabcut_masks_never_leave_the_boxes(pipeline: dict) -> None:
    p: PipePaths = pipeline["paths"]
    names = p.class_names()
    stats = pipeline["results"]["refine"]
    train = list_images(p.clean / "train" / "images")
    assert stats["images"] == len(train) and 0 <= stats["fallbacks"] <= stats["boxes"]
    changed = 0
    for image in train:
        coarse = read_index_mask(p.clean / "train" / "coarse_masks" / f"{image.stem}.png", 6)
        for folder in ("refined_masks", "grabcut_masks"):
            path = p.mask_root(folder) / "train" / folder / f"{image.stem}.png"
            refined = read_index_mask(path, len(names))
            assert refined.shape == coarse.shape
            assert not np.any((refined > 0) & (coarse == 0)), f"{folder}/{image.stem}"
            # each painted pixel has the class of one of the boxes covering it
            boxes = read_yolo_labels(p.clean / "train" / "labels" / f"{image.stem}.txt", 6)
            allowed = np.zeros((len(names) + 1, *coarse.shape), bool)
            allowed[0] = True
            for box in boxes:
                x1, y1, x2, y2 = box_pixels(box, coarse.shape[1], coarse.shape[0])
                allowed[box.class_id + 1, y1:y2, x1:x2] = True
            assert np.take_along_axis(allowed, refined[None].astype(np.intp), 0).all()
            changed += folder == "refined_masks" and not np.array_equal(refined, coarse)
    assert changed > 0 or stats["fallbacks"] == stats["boxes"]


def _iou(pred: list[np.ndarray], true: list[np.ndarray], value: int) -> float | None:
    inter = sum(int(((a == value) & (b == value)).sum()) for a, b in zip(pred, true, strict=True))
    union = sum(int(((a == value) | (b == value)).sum()) for a, b in zip(pred, true, strict=True))
    return inter / union if union else None


def test_evaluate_reports_every_row_from_the_written_masks(pipeline: dict) -> None:
    p: PipePaths = pipeline["paths"]
    names = p.class_names()
    report = json.loads((p.metrics_dir / "pipe_iou.json").read_text())
    assert report == pipeline["results"]["evaluate"]
    assert report["classes"] == names and report["split"] == "test"
    assert set(report["training_masks"]) == {"box", "grabcut", "refined"}
    assert set(report["models"]) == {"baseline", *MODELS}
    for group in ("training_masks", "models"):
        for row in report[group].values():
            assert set(row) == {*names, "mean"}
            present = [v for k, v in row.items() if k != "mean" and v is not None]
            assert all(0.0 <= v <= 1.0 for v in present)
            assert row["mean"] == pytest.approx(float(np.mean(present)))
    # recomputed from the files: the final model's test predictions and the refined masks
    test = [i.stem for i in list_images(p.clean / "test" / "images")]
    true = [read_index_mask(p.clean / "test" / "true_masks" / f"{s}.png", 4) for s in test]
    for model in ("final", "baseline"):
        pred = [read_index_mask(p.predictions(model, "test") / f"{s}.png", 4) for s in test]
        for k, name in enumerate(names):
            expected = _iou(pred, true, k + 1)
            got = report["models"][model][name]
            assert got == (None if expected is None else pytest.approx(expected)), (model, name)
    fine = set(read_fine(p.clean))
    stems = [i.stem for i in list_images(p.clean / "train" / "images") if i.stem not in fine]
    assert report["counts"]["train_masks"] == len(stems)
    true = [read_index_mask(p.clean / "train" / "true_masks" / f"{s}.png", 4) for s in stems]
    pred = [read_index_mask(p.refined / "train" / "refined_masks" / f"{s}.png", 4) for s in stems]
    for k, name in enumerate(names):
        expected = _iou(pred, true, k + 1)
        assert report["training_masks"]["refined"][name] == pytest.approx(expected)
    table = (p.metrics_dir / "pipe_iou.md").read_text()
    assert "| class | baseline | final | increase | % |" in table
    for name in names:
        assert f"| {name} |" in table
    for row in ("box", "grabcut", "refined"):
        assert f"| training masks: {row} |" in table
    for row in ("baseline", *MODELS):
        assert f"| model: {row} |" in table
    final = report["models"]["final"]["mean"]
    assert final is None or f"{final:.3f}" in table
    assert_png(p.plots_dir / "test_iou_per_class.png")  # every row of the table, as bars


def test_every_model_is_a_child_of_one_parent_run(pipeline: dict) -> None:
    from mlflow.tracking import MlflowClient

    p: PipePaths = pipeline["paths"]
    record = json.loads((p.work / "mlflow_parent.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    parent = client.get_run(record["run_id"])
    experiment = parent.info.experiment_id
    runs = client.search_runs([experiment], max_results=100)
    children = {
        r.data.tags["pipe.model"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    expected = {f"baseline-{n}" for n in p.class_names()} | set(MODELS)
    assert set(children) == expected
    assert len(runs) == len(expected) + 1  # the children and the parent, nothing else
    for child in children.values():
        assert any(k.startswith("best/") for k in child.data.metrics), child.data.tags["pipe.model"]
    assert any(k.startswith("test_iou/models/final/") for k in parent.data.metrics)
    figures = [a.path for a in client.list_artifacts(parent.info.run_id, "plots")]
    assert figures == ["plots/test_iou_per_class.png"]


def test_stages_rerun_to_the_same_result(pipeline: dict) -> None:
    """Data stages rerun byte for byte; a training stage reruns into the same folders."""

    p: PipePaths = pipeline["paths"]
    cfg = pipeline["cfg"]
    refined_before = _digest(p.refined / "train" / "refined_masks")
    report_before = (p.metrics_dir / "pipe_iou.json").read_text()
    parent_before = json.loads((p.work / "mlflow_parent.json").read_text())["run_id"]
    with torch_threads(1):
        for stage in ("import", "clean", "layouts", "refine", "evaluate"):
            run_stage(cfg, stage)
        overrides = pipe_overrides(pipeline["raw"], pipeline["out"])
        drop = ("baseline", "final", "oracle")
        one = compose_config([*overrides, *(f"~pipe.models.{m}" for m in drop)])
        assert set(run_stage(one, "final")) == {"box"}
    assert _digest(p.refined / "train" / "refined_masks") == refined_before
    assert (p.metrics_dir / "pipe_iou.json").read_text() == report_before
    ckpts = sorted(c.name for c in (p.model("box") / "checkpoints").iterdir())
    assert len(ckpts) == 2 and "last.ckpt" in ckpts  # the best epoch and last, no -v1 copies
    assert json.loads((p.work / "mlflow_parent.json").read_text())["run_id"] == parent_before


def test_refine_with_each_baselines_tuned_threshold(pipeline: dict, one_thread: None) -> None:
    p: PipePaths = pipeline["paths"]
    names = p.class_names()
    overrides = pipe_overrides(pipeline["raw"], pipeline["out"])
    train = p.refined / "train"
    saved = pipeline["out"] / "saved_masks"
    kept = {saved / f: train / f for f in ("refined_masks", "grabcut_masks")}
    kept[saved / "layout"] = p.layout("refined")
    for copy, folder in kept.items():
        shutil.copytree(folder, copy, dirs_exist_ok=True)
    try:
        stats = run_stage(compose_config([*overrides, "pipe.refine.threshold=null"]), "refine")
        assert set(stats["thresholds"]) == set(names)
        for name, cut in stats["thresholds"].items():
            assert cut == load_bundle(p.baseline(name) / "bundle.pt")["thresholds"]["pixel"][0]
        for image in list_images(p.clean / "train" / "images"):
            coarse = read_index_mask(p.clean / "train" / "coarse_masks" / f"{image.stem}.png", 4)
            refined_path = p.refined / "train" / "refined_masks" / f"{image.stem}.png"
            refined = read_index_mask(refined_path, 4)
            assert not np.any((refined > 0) & (coarse == 0))
    finally:  # the default masks back for any later reader
        for copy, folder in kept.items():
            shutil.rmtree(folder)
            shutil.copytree(copy, folder)


def test_cli_runs_a_stage(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "data.yaml").write_text("names: [a]\nnc: 1\n")
    (raw / "train" / "images").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "defects.pipe", "import", f"paths.data_dir={raw}",
         f"pipe.work_dir={tmp_path / 'work'}", "logger=none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "work" / "imported" / "data.yaml").is_file()
    cfg = compose_config(
        ["task=pipe", f"paths.data_dir={raw}", f"pipe.work_dir={tmp_path / 'work'}", "logger=none"]
    )
    with pytest.raises(SystemExit, match="run the clean stage first"):  # one line, no traceback
        run_entry(lambda c: run_stage(c, "layouts"), cfg)
