"""The exported Faster R-CNN gives the eager detector's answer at any image size."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from defects.kinds.fasterrcnn.export import (
    _batched_nms_first,
    _PoolThenHead,
    export_detector,
    traceable_copy,
)
from defects.kinds.fasterrcnn.net import Detector
from defects.kinds.fasterrcnn.predictor import OnnxDetector
from tests.conftest import torch_threads

# The weld config at the test size; every proposal scored (box_score_thresh 0) so a random
# network yields a full list of detections to compare.
TINY = dict(
    arch="fasterrcnn_mobilenet_v3_large_fpn",
    min_size=128,
    max_size=160,
    image_mean=[0.5] * 3,
    image_std=[0.25] * 3,
    returned_layers=[2, 3, 5],
    norm_momentum=0.1,
    representation_size=256,
    rpn_pre_nms_top_n_test=500,
    rpn_post_nms_top_n_test=300,
    box_score_thresh=0.0,
    anchor_sizes=[16, 32, 64, 128, 256],
    aspect_ratios=[0.2, 0.5, 1.0, 2.0, 5.0],
)
# (height, width): the native size, down- and up-scaled, landscape and portrait, and sizes
# whose scale factor rounds badly in float32 (200x120, 97x131).
SIZES = [(128, 160), (256, 384), (384, 256), (200, 120), (97, 131)]
BOX_TOL, SCORE_TOL = 1e-3, 1e-4


def scene(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A grayscale radiograph-like image: a smooth ramp, a few patches, a little noise."""
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij"
    )
    image = 0.3 + 0.2 * xx + 0.1 * yy
    for _ in range(6):
        y0 = int(torch.randint(0, height - 8, (1,), generator=generator))
        x0 = int(torch.randint(0, width - 8, (1,), generator=generator))
        h = int(torch.randint(4, height // 3, (1,), generator=generator))
        w = int(torch.randint(4, width // 3, (1,), generator=generator))
        image[y0 : y0 + h, x0 : x0 + w] += float(torch.rand(1, generator=generator)) * 0.5 - 0.25
    image += 0.02 * torch.randn(height, width, generator=generator)
    return image.clamp(0, 1)[None]


def make_detector(seed: int = 0) -> Detector:
    """A random detector whose BatchNorm statistics come from a few images: with the initial
    statistics the features are ~1e-9, every proposal scores the same to 1e-6 and the
    detection order is a coin toss, which would make parity meaningless."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    detector = Detector(3, **TINY)
    model = detector.model
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration pass
    images = detector.to_rgb([scene(128, 160, generator) for _ in range(4)])
    model.backbone.train()
    with torch.no_grad():
        model.backbone(model.transform(images)[0].tensors)
    return detector.eval()


def assert_same_detections(eager: dict, onnx: dict) -> None:
    """Same count; then, in eager's order, each detection has an ONNX twin with the same
    label, a box within BOX_TOL px and a score within SCORE_TOL. The twin is the one at the
    same rank unless scores tie to within SCORE_TOL, where the order is not defined (eager
    itself reorders such ties between 1 and 2 threads)."""
    n = len(eager["scores"])
    assert len(onnx["scores"]) == n
    assert onnx["boxes"].shape == (n, 4) and onnx["boxes"].dtype == torch.float32
    assert onnx["labels"].dtype == torch.int64 and onnx["scores"].dtype == torch.float32
    free = torch.ones(n, dtype=torch.bool)
    for i in range(n):
        candidates = free & (onnx["labels"] == eager["labels"][i])
        candidates &= (onnx["scores"] - eager["scores"][i]).abs() <= SCORE_TOL
        diff = (onnx["boxes"] - eager["boxes"][i]).abs().amax(dim=1)
        diff[~candidates] = float("inf")
        j = int(diff.argmin())
        assert diff[j] <= BOX_TOL, f"detection {i} ({eager['boxes'][i].tolist()}) has no twin"
        free[j] = False


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Eager torch on 1 thread: OpenMP on a busy 2-core runner slows down tenfold."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, OnnxDetector, Path]:
    detector = make_detector()
    detector.train()  # export must neither need nor change eval mode
    path = export_detector(
        detector,
        tmp_path_factory.mktemp("onnx") / "detector.onnx",
        channels=1,
        example_hw=(128, 160),
    )
    assert detector.training and detector.model.backbone.training
    return detector.eval(), OnnxDetector(path, threads=2), path


def test_export_leaves_the_detector_alone(exported) -> None:
    detector, onnx_detector, path = exported
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert onnx_detector.channels == 1
    # The traceable resize and RoI pooling are patched into the exported copy only.
    heads = detector.model.roi_heads
    assert "resize" not in vars(detector.model.transform)
    assert "forward" not in vars(detector.model.rpn)
    assert detector.model.transform.image_mean == TINY["image_mean"]
    assert type(heads.box_roi_pool) is MultiScaleRoIAlign
    assert not isinstance(heads.box_head, torch.nn.Identity)


def test_onnx_matches_eager_at_any_size(exported) -> None:
    detector, onnx_detector, _ = exported
    generator = torch.Generator().manual_seed(1)
    images = [scene(h, w, generator) for h, w in SIZES]
    # One image per call: a mixed-size eager batch is zero-padded to its largest image,
    # which changes the features near the padded edges (the graph takes one image).
    with torch.inference_mode():
        eager = [detector([image])[0] for image in images]
    onnx = onnx_detector(images)
    for image, e, o in zip(images, eager, onnx, strict=True):
        assert len(e["scores"]) >= 50, image.shape  # parity over a real list, not vacuous
        assert len(e["labels"].unique()) == 2  # both classes present
        assert_same_detections(e, o)
        height, width = image.shape[-2:]
        assert float(o["boxes"][:, 2].max()) <= width and float(o["boxes"][:, 3].max()) <= height


def test_rgb_export_matches_eager(tmp_path: Path) -> None:
    """A three-channel export keeps torchvision's order (normalise and resize every plane)
    and still gives the eager detections. The planes differ a little: the random network's
    BatchNorm statistics come from gray scenes, and far-off colours (a flipped plane, say)
    blow its activations up until float32 rounding moves boxes by ~1e-2 px, before and
    after this module's swaps alike."""
    detector = make_detector()
    onnx_detector = OnnxDetector(export_detector(detector, tmp_path / "rgb.onnx", channels=3))
    assert onnx_detector.channels == 3
    generator = torch.Generator().manual_seed(5)
    for height, width in SIZES[:2]:
        gray = scene(height, width, generator)
        image = torch.cat(
            [gray, (gray * 0.95 + 0.03).clamp(0, 1), (gray * 1.05 - 0.03).clamp(0, 1)]
        )
        with torch.inference_mode():
            (eager,) = detector([image])
        (onnx,) = onnx_detector([image])
        assert len(eager["scores"]) >= 50
        assert_same_detections(eager, onnx)


def test_swaps_give_torchvisions_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run eagerly, the exported copy's RPN (pick the top logits, then build and decode only
    their anchors; NMS that stops at post_nms_top_n) gives torchvision's own proposals bit
    for bit, and its one-channel transform the three-channel one's pixels. Both RPNs NMS by
    torchvision's traced rule: on the CPU eager torchvision loops over levels for large sets,
    whose IoUs of unshifted boxes may round differently at the threshold (the ONNX parity
    test covers that pairing). The traceable resize itself is ATen's to 1 ulp."""
    monkeypatch.setattr(box_ops, "_batched_nms_vanilla", box_ops._batched_nms_coordinate_trick)
    detector = make_detector()
    model = detector.model
    swapped, three = traceable_copy(detector, channels=1), traceable_copy(detector, channels=3)
    assert swapped.gray and not three.gray
    generator = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        for height, width in SIZES:
            image = scene(height, width, generator)
            images, _ = model.transform(detector.to_rgb([image]))
            mine, _ = swapped.detector.model.transform([image])
            rgb, _ = three.detector.model.transform(detector.to_rgb([image]))
            assert torch.equal(mine.tensors, rgb.tensors), (height, width)
            assert mine.image_sizes == images.image_sizes
            torch.testing.assert_close(mine.tensors, images.tensors, rtol=0, atol=3e-7)
            features = model.backbone(images.tensors)
            (expected,), _ = model.rpn(images, features)
            (proposals,), _ = swapped.detector.model.rpn(images, features)
            assert len(expected) == model.rpn.post_nms_top_n(), (height, width)
            assert torch.equal(proposals, expected), (height, width)


def test_nms_that_stops_equals_torchvision_cut(tmp_path: Path) -> None:
    """`_batched_nms_first` in ONNX Runtime keeps the same boxes, in the same order, as
    torchvision's batched NMS cut to `count`: below and above the number NMS keeps, and on
    an empty set."""
    generator = torch.Generator().manual_seed(4)
    corner = torch.rand(400, 2, generator=generator) * 60
    boxes = torch.cat([corner, corner + 4 + torch.rand(400, 2, generator=generator) * 30], 1)
    scores = torch.rand(400, generator=generator)
    groups = torch.randint(0, 3, (400,), generator=generator)
    kept = len(box_ops.batched_nms(boxes, scores, groups, 0.5))
    assert 20 < kept < 400

    class Cut(torch.nn.Module):
        def __init__(self, count: int):
            super().__init__()
            self.count = count

        def forward(self, b: torch.Tensor, s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            return _batched_nms_first(b, s, g, 0.5, self.count)

    import onnxruntime as ort

    for count in (20, 500):
        path = tmp_path / f"nms{count}.onnx"
        names = ["boxes", "scores", "groups"]
        torch.onnx.export(
            Cut(count),
            (boxes, scores, groups),
            path,
            input_names=names,
            dynamic_axes={name: {0: "n"} for name in names},
            opset_version=17,
            dynamo=False,
        )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        expected = box_ops.batched_nms(boxes, scores, groups, 0.5)[:count]
        assert torch.equal(Cut(count)(boxes, scores, groups), expected)
        for b, s, g, want in (
            (boxes, scores, groups, expected),
            (boxes[:0], scores[:0], groups[:0], expected[:0]),
        ):
            feeds = dict(zip(names, (b.numpy(), s.numpy(), g.numpy()), strict=True))
            (got,) = session.run(None, feeds)
            np.testing.assert_array_equal(got, want.numpy())


class _PoolGraph(torch.nn.Module):
    """Three FPN maps and boxes in, box-head features out: the pooling step alone."""

    def __init__(self, pool: torch.nn.Module, image_hw: tuple[int, int]):
        super().__init__()
        self.pool, self.image_hw = pool, image_hw

    def forward(
        self, f0: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        return self.pool({"0": f0, "1": f1, "2": f2}, [boxes], [self.image_hw])


def test_pooling_matches_torchvision_on_every_level(tmp_path: Path) -> None:
    """Boxes on all three FPN levels, then none beyond the first: the detector tests'
    images are too small for a box to reach level 1 (sqrt(area) >= 224 px), so the
    per-level head and the permutation back to proposal order are checked here, in eager
    and in the graph, against torchvision's pool followed by the head."""
    heads = make_detector().model.roi_heads
    image_hw = (640, 768)
    generator = torch.Generator().manual_seed(2)
    maps = [torch.randn(1, 256, 80 // k, 96 // k, generator=generator) for k in (1, 2, 4)]

    def boxes(sides: list[float]) -> torch.Tensor:
        corner = torch.rand(len(sides), 2, generator=generator) * 100
        side = torch.tensor(sides)[:, None] * torch.tensor([1.0, 0.8])
        return torch.cat([corner, corner + side], dim=1)

    mixed = boxes([20, 400, 60, 600, 30, 300, 550, 250])  # levels 0, 1, 2 interleaved
    small = boxes([20, 50, 120])  # level 0 only

    def reference(b: torch.Tensor) -> torch.Tensor:
        pooled = heads.box_roi_pool(dict(zip("012", maps, strict=True)), [b], [image_hw])
        return heads.box_head(pooled)

    fused = _PoolGraph(_PoolThenHead(heads.box_roi_pool, heads.box_head), image_hw).eval()
    with torch.inference_mode():
        for b in (mixed, small):
            torch.testing.assert_close(fused(*maps, b), reference(b), rtol=0, atol=1e-6)
        assert set(heads.box_roi_pool.map_levels([mixed]).tolist()) == {0, 1, 2}
    path = tmp_path / "pool.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings, as in export_detector
        torch.onnx.export(
            fused,
            (*maps, mixed),
            path,
            input_names=["f0", "f1", "f2", "boxes"],
            dynamic_axes={"boxes": {0: "n"}},
            opset_version=17,
            dynamo=False,
        )
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (mixed, small):
        feeds = dict(zip(["f0", "f1", "f2", "boxes"], (t.numpy() for t in (*maps, b)), strict=True))
        with torch.inference_mode():
            expected = reference(b).numpy()
        np.testing.assert_allclose(session.run(None, feeds)[0], expected, rtol=0, atol=1e-5)


def test_onnx_rejects_wrong_channels(exported) -> None:
    _, onnx_detector, _ = exported
    with pytest.raises(ValueError, match="1,H,W"):
        onnx_detector([torch.rand(3, 64, 64)])


def test_onnx_returns_empty_lists(exported, tmp_path: Path) -> None:
    detector = copy.deepcopy(exported[0])
    detector.model.roi_heads.score_thresh = 1.0  # nothing passes
    onnx_detector = OnnxDetector(export_detector(detector, tmp_path / "d.onnx", channels=1))
    (out,) = onnx_detector([torch.rand(1, 100, 150)])
    assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)
    assert out["scores"].shape == (0,) and out["labels"].dtype == torch.int64
