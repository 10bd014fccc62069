"""The YOLO kind: adapter contract, recipe pieces, NMS, learning, export parity, no side effects.

Needs the `yolo` extra (CI installs `.[dev,dvc,score,docs,yolo]`); without it the module is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from defects.kinds.yolo import adapter  # imports no Ultralytics by itself
from defects.kinds.yolo.boxes import Letterbox, decode, letterbox
from defects.kinds.yolo.recipe import ModelEMA, Warmup, parameter_groups
from tests.conftest import compose_config
from tests.kind_contracts import winding_frames, winding_overrides

# Skip without the extra, and never import Ultralytics unguarded at collection: its import
# changes process-wide state (threads, torch.save, warning filters) for every other test.
pytestmark = [
    pytest.mark.skipif(not adapter.available(), reason="needs the yolo extra"),
    pytest.mark.usefixtures("one_thread"),
]

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["gap", "crossed_turn", "loose_loop", "bulge"]
# That YOLO learns, evaluates what predict writes and exports faithfully: test_kinds_contract.


# ---------------------------------------------------------------- adapter contract
def test_adapter_contract_of_the_apis_it_uses() -> None:
    assert adapter.ultralytics()["ultralytics"].__version__ == adapter.VERSION
    spec = adapter.model_yaml("yolo12n.yaml")
    assert spec["scale"] == "n" and {"backbone", "head", "scales"} <= set(spec)
    model = adapter.detection_model(spec, num_classes=4, channels=3)
    assert adapter.detect_head(model).stride.tolist() == [8.0, 16.0, 32.0]
    model.train()
    out = model(torch.rand(2, 3, 64, 64))
    assert {"boxes", "scores", "feats"} <= set(out)
    loss = adapter.detection_loss(model, box=7.5, cls=0.5, dfl=1.5)
    batch = {
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([1.0, 3.0]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.3, 0.4, 0.2, 0.1]]),
    }
    total, items = loss(out, batch)
    assert total.shape == (3,) and list(items) == ["box_loss", "cls_loss", "dfl_loss"]
    # Gains are read from model.args and the sum is x batch size: doubling cls doubles it.
    again = adapter.detection_loss(model, box=7.5, cls=1.0, dfl=1.5)(out, batch)[0]
    assert torch.allclose(again[1], 2 * total[1]) and torch.allclose(again[0], total[0])
    assert torch.allclose(total, 2 * torch.stack(list(items.values())))
    model.eval()
    decoded = model(torch.rand(1, 3, 64, 64))[0]
    assert decoded.shape == (1, 4 + 4, (8 * 8) + (4 * 4) + (2 * 2))


def test_ultralytics_metric_on_given_predictions_agrees_with_ours() -> None:
    """The benchmark's second row: Ultralytics' matching + ap_per_class on our detections."""
    from defects.kinds.detection.evaluate import score_detections
    from defects.results import Detections

    truth = {"boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40.0]]), "class_ids": np.array([0, 1])}
    # class 0 found; class 1 found once plus a false alarm ranked above it
    det = Detections(
        boxes=np.array([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 40, 41.0]]),
        labels=["a", "b", "b"],
        class_ids=np.array([0, 1, 1]),
        scores=np.array([0.9, 0.8, 0.6]),
        class_names=["a", "b"],
    )
    ours, _ = score_detections([det], [truth], ["a", "b"], 0.5, "test")
    preds = [
        {
            "boxes": torch.as_tensor(det.boxes).float(),
            "labels": torch.as_tensor(det.class_ids),
            "scores": torch.as_tensor(det.scores).float(),
        }
    ]
    truths = [{"boxes": torch.as_tensor(truth["boxes"]).float(), "labels": torch.tensor([0, 1])}]
    theirs = adapter.reference_box_metrics(preds, truths)
    # class a: AP 1; class b: precision 1/2 at full recall -> 0.5 in both (101-point COCO vs
    # Ultralytics' interpolated envelope agree on a step this simple)
    assert ours["test/mAP50"] == pytest.approx(0.75, abs=1e-6)
    assert theirs["mAP50"] == pytest.approx(ours["test/mAP50"], abs=0.01)
    assert theirs["recall"] == pytest.approx(1.0)


def test_importing_ultralytics_leaves_the_process_as_it_was(tmp_path: Path) -> None:
    """Fresh interpreter, HOME empty, OMP_NUM_THREADS unset: import through the adapter and
    build a model; torch keeps its threads, torch.save stays torch's, HOME stays empty."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    code = (
        "import torch, os, json\n"
        "from PIL import Image\n"
        "opener = Image.open\n"
        "before = (torch.get_num_threads(), torch.save, os.environ.get('OMP_NUM_THREADS'))\n"
        "from defects.kinds.yolo import adapter\n"
        "adapter.detection_model(adapter.model_yaml('yolo12n.yaml'), 4, 3)\n"
        "after = (torch.get_num_threads(), torch.save, os.environ.get('OMP_NUM_THREADS'))\n"
        "assert Image.open is opener, 'PIL.Image.open was replaced'\n"
        "print(json.dumps([before[0], after[0], before[1] is after[1], before[2], after[2]]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "YOLO_CONFIG_DIR")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    threads_before, threads_after, same_save, omp_before, omp_after = json.loads(
        out.stdout.strip().splitlines()[-1]
    )
    assert threads_after == threads_before
    assert same_save and omp_before is None and omp_after is None
    # HOME holds at most matplotlib's font cache (torchmetrics imports matplotlib for every
    # task, YOLO or not); nothing of Ultralytics'.
    in_home = {p.relative_to(home).parts[:2] for p in home.rglob("*") if p.is_file()}
    assert in_home <= {(".cache", "matplotlib"), (".config", "matplotlib")}, in_home
    written = [p.relative_to(work).parts[0] for p in work.rglob("*") if p.is_file()]
    assert set(written) <= {".cache"}  # settings and font cache, in the run's own folder


def test_without_the_extra_winding_says_which_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ultralytics'] = None\n"
        "from tests.conftest import compose_config\n"
        "from hydra.utils import instantiate\n"
        "from defects.kinds.yolo.adapter import MissingExtraError\n"
        "cfg = compose_config(['task=weld'])\n"
        "instantiate(cfg.model, _convert_='all')\n"  # weld works without it
        "try:\n"
        "    instantiate(compose_config(['task=winding']).model, _convert_='all')\n"
        "except Exception as err:\n"
        "    cause = err\n"
        "    while cause is not None and not isinstance(cause, MissingExtraError):\n"
        "        cause = cause.__cause__\n"
        "    print('MISSING', cause)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "MISSING" in out.stdout and "'yolo' extra" in out.stdout and "pip install" in out.stdout


# ---------------------------------------------------------------- recipe pieces
def test_parameter_groups_put_every_parameter_in_one_group() -> None:
    model = adapter.detection_model(adapter.model_yaml("yolo12n.yaml"), 4, 3)
    decayed, norms, biases = parameter_groups(model, 0.0005)
    ids = [id(p) for g in (decayed, norms, biases) for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]  # DFL's conv is fixed
    assert len(ids) == len(set(ids)) == len(trainable)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any(p is bn.weight for p in norms["params"])
    assert any(p is bn.bias for p in biases["params"])
    assert (
        decayed["weight_decay"] == 0.0005 and norms["weight_decay"] == biases["weight_decay"] == 0
    )


def test_warmup_ramps_rate_bias_rate_and_momentum_then_decays_linearly() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(parameter_groups(net, 1e-4), lr=0.01, momentum=0.9)
    w = Warmup(lr=0.01, epochs=10, iters_per_epoch=20, warmup_epochs=3, warmup_bias_lr=0.1)
    assert w.warmup_iters == 100  # max(3 x 20, 100)
    w.apply(opt, 0, 0)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0, 0.1]
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    w.apply(opt, 50, 2)
    target = 0.01 * w.epoch_factor(2)
    assert opt.param_groups[0]["lr"] == pytest.approx(target / 2)
    assert opt.param_groups[2]["lr"] == pytest.approx((0.1 + target) / 2)
    w.apply(opt, 150, 7)
    assert all(g["lr"] == pytest.approx(0.01 * (0.3 * 0.99 + 0.01)) for g in opt.param_groups)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.937)
    adam = torch.optim.AdamW(parameter_groups(net, 1e-4), lr=0.001, betas=(0.9, 0.999))
    w.apply(adam, 0, 0)
    assert adam.param_groups[0]["betas"] == (0.8, 0.999)


def test_ema_follows_the_documented_average() -> None:
    live = torch.nn.Linear(2, 1)
    ema = ModelEMA(live, decay=0.5, tau=1.0)
    start = live.weight.detach().clone()
    with torch.no_grad():
        live.weight.add_(1.0)
    ema.update(live)
    d = 0.5 * (1 - np.exp(-1.0))
    assert torch.allclose(ema.module.weight, d * start + (1 - d) * live.weight)
    assert int(ema.updates) == 1 and not ema.module.training
    ema.train()
    assert not ema.module.training


# ---------------------------------------------------------------- letterbox and NMS
def test_letterbox_places_the_image_centred_and_decode_maps_boxes_back() -> None:
    image = torch.rand(3, 120, 160)
    canvas, place = letterbox(image, 320)
    assert canvas.shape == (1, 3, 320, 320) and place.scale == 2.0 and place.pad_y == 40
    assert torch.allclose(canvas[0, :, :40], torch.full_like(canvas[0, :, :40], 114 / 255))
    raw = torch.zeros(4 + 2, 3)
    # anchor 0: class 0 at (100, 140) 40x20 in canvas pixels; anchor 1: same box, class 1;
    # anchor 2: overlaps anchor 0, class 0, lower score -> suppressed by class-aware NMS.
    raw[:4, 0] = torch.tensor([100.0, 140.0, 40.0, 20.0])
    raw[:4, 1] = torch.tensor([100.0, 140.0, 40.0, 20.0])
    raw[:4, 2] = torch.tensor([102.0, 141.0, 40.0, 20.0])
    raw[4, 0], raw[5, 1], raw[4, 2] = 0.9, 0.8, 0.7
    out = decode(raw, place, conf=0.01, iou=0.5)
    assert out["labels"].tolist() == [1, 2] and out["scores"].tolist() == pytest.approx([0.9, 0.8])
    assert out["boxes"][0].tolist() == pytest.approx([40.0, 45.0, 60.0, 55.0])


def test_decode_keeps_every_candidate_no_time_limit() -> None:
    """5000 separate boxes of one class: all kept up to max_det, whatever the CPU speed."""
    n = 5000
    raw = torch.zeros(5, n)
    xs = torch.arange(n, dtype=torch.float32) * 10
    raw[0], raw[1], raw[2], raw[3], raw[4] = xs, 5.0, 4.0, 4.0, torch.linspace(0.9, 0.1, n)
    # The identity placement of a 10 x 50000 image (letterboxing one to get it would fill a
    # 50000^2 float canvas: 10 GB, the suite's peak memory before this test stopped doing so).
    place = Letterbox(scale=1.0, pad_x=0.0, pad_y=0.0, height=10, width=n * 10)
    out = decode(raw, place, conf=0.05, iou=0.5, max_det=n)
    assert len(out["scores"]) == n


def test_runner_batches_canvases_of_one_shape_with_the_answers_of_one_at_a_time() -> None:
    """Mixed shapes: one network call per canvas shape, each image's own boxes, in order."""
    from defects.kinds.yolo.predictor import YoloRunner

    calls: list[tuple[int, ...]] = []

    def network(x: torch.Tensor) -> torch.Tensor:
        # Per image and elementwise, so a batch gives exactly each image's own output: one
        # anchor per 8x8 block, a box around it, class scores from the block's channel means.
        calls.append(tuple(x.shape))
        n, _, h, w = x.shape
        blocks = torch.nn.functional.avg_pool2d(x, 8)  # n, 3, h/8, w/8
        ys, xs = torch.meshgrid(torch.arange(h // 8), torch.arange(w // 8), indexing="ij")
        centre = torch.stack((xs * 8 + 4.0, ys * 8 + 4.0)).flatten(1).expand(n, 2, -1)
        size = torch.full_like(centre, 8.0)
        return torch.cat((centre, size, blocks[:, :2].flatten(2)), 1)

    post = {"imgsz": 128, "conf": 0.3, "iou": 0.5, "max_det": 300, "rect": True, "stride": 32}
    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 128), (128, 64), (64, 128), (128, 128), (60, 120)]
    images = [torch.rand(3, h, w, generator=gen) for h, w in shapes]
    batched = YoloRunner(network, post)(images)
    assert sorted(calls) == [(1, 3, 128, 64), (1, 3, 128, 128), (3, 3, 64, 128)]
    calls.clear()
    for image, got in zip(images, batched, strict=True):
        (want,) = YoloRunner(network, post)([image])
        assert len(want["scores"]) > 0
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(got[key], want[key]), key
    assert len(calls) == len(images)


# ---------------------------------------------------------------- augmentation
def test_mosaic_pipeline_makes_square_canvases_and_close_mosaic_turns_it_off(
    tmp_path: Path,
) -> None:
    from hydra.utils import instantiate

    from defects.kinds.yolo.callbacks import CloseMosaic

    root = winding_frames(tmp_path / "data", held_out=1)
    cfg = compose_config([*winding_overrides(root, tmp_path), "model.imgsz=96", "data.mixup=0.5"])
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    train = dm.datasets["train"]
    assert train.mosaic.key == "mosaic_metadata" and train.mosaic.on
    image, target = train[0]
    assert image.shape == (3, 96, 96)
    boxes = target["boxes"]
    assert ((boxes >= 0) & (boxes <= 96)).all()

    class Trainer:  # what CloseMosaic reads
        datamodule, max_epochs, current_epoch = dm, 10, 8

    CloseMosaic(epochs=2).on_train_epoch_start(Trainer(), None)
    assert not train.mosaic.on and train.mosaic._transforms[0].p == 0.0
    assert train[0][0].shape == (3, 96, 96)  # letterbox still squares it
    Trainer.current_epoch = 0
    CloseMosaic(epochs=2).on_train_epoch_start(Trainer(), None)
    assert train.mosaic.on and train.mosaic._transforms[0].p == 1.0


# ---------------------------------------------------------------- the kind end to end
def test_fast_dev_run_composes_and_runs(tmp_path: Path) -> None:
    from defects.train import train

    root = winding_frames(tmp_path / "data", held_out=1)
    cfg = compose_config(
        [
            *winding_overrides(root, tmp_path),
            "trainer.fast_dev_run=true",
            "model.imgsz=64",
            "data.batch_size=2",
            "model.conf=0.05",
        ]
    )
    metrics = train(cfg)
    assert "train/loss" in metrics and np.isfinite(metrics["train/loss"])


def test_colab_gpu_config_composes_for_winding(tmp_path: Path) -> None:
    """`trainer=gpu` (16-mixed) composes with the YOLO kind: manual optimisation keeps
    Lightning's gradient clipping off, so the trainer must not set it either."""
    cfg = compose_config([*winding_overrides(tmp_path, tmp_path), "trainer=gpu"])
    assert cfg.trainer.precision == "16-mixed" and cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.get("gradient_clip_val") is None
    assert cfg.model._target_.endswith("YoloModule") and cfg.model.channels == 3
