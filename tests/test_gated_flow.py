"""The gated flow: designs skip work exactly where the gate says, thresholds are tuned right,
and the ONNX graphs give the eager answer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from defects.kinds.gated.export import export_onnx
from defects.kinds.gated.flow import GatedFlow, pad_to_stride
from defects.kinds.gated.module import gate_targets
from defects.kinds.gated.net import Segmenter, rescale
from defects.kinds.gated.thresholds import Thresholds, ThresholdSearch, binarize, gate_scores
from defects.metrics.segmentation import pair_dice
from tests.conftest import torch_threads

TINY = dict(
    encoder="timm-efficientnet-b0",
    decoder_channels=[16, 16, 16, 16, 16],
    gate_encoder="timm-efficientnet-b0",
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


def make(design: str, seed: int = 0) -> Segmenter:
    """A random network whose BatchNorm statistics come from one batch of images: with the
    initial statistics every activation is ~1e-5 and all images get the same gate score."""
    torch.manual_seed(seed)
    net = Segmenter(3, design=design, **TINY)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    with torch.no_grad():
        net.train()(torch.rand(4, 1, 64, 96))
    for m in norms:
        m.momentum = 0.1
    if net.gate is not None:  # keep the gate's max-over-cells logits out of sigmoid saturation
        net.gate.head.weight.data *= 0.01
    return net.eval()


@pytest.mark.parametrize("design", ["separate", "two_heads", "shared_backbone"])
def test_ungated_flow_equals_forward(design: str) -> None:
    """With no gate threshold the flow is the network's own forward pass (after sigmoid)."""
    net = make(design)
    x = torch.rand(3, 1, 64, 96)
    flow = GatedFlow.eager(net)
    gate, masks = flow(x)
    with torch.inference_mode():
        out = net(x)
    assert torch.allclose(masks, torch.sigmoid(out["mask_logits"]), atol=1e-5)
    assert torch.allclose(flow.ungated(x), masks, atol=1e-5)  # the segmenter alone
    assert torch.allclose(gate, torch.sigmoid(out["gate_logits"]), atol=1e-5)


@pytest.mark.parametrize("design", ["separate", "shared_backbone"])
def test_rejected_images_skip_the_decoder(design: str) -> None:
    net = make(design)
    x = torch.rand(4, 1, 64, 96)
    flow = GatedFlow.eager(net)
    gate, full = flow(x)
    order = gate.max(1).values.argsort()
    threshold = float((gate.max(1).values[order[1]] + gate.max(1).values[order[2]]) / 2)
    calls: list[int] = []
    part = flow.parts["segment" if design == "separate" else "decode"]
    handle = part.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        gate2, gated = flow(x, gate_threshold=threshold)
    finally:
        handle.remove()
    keep = gate.max(1).values >= threshold
    assert calls == [int(keep.sum())] == [2]
    assert torch.equal(gate2, gate)
    assert torch.allclose(gated[keep], full[keep], atol=1e-5)
    assert not gated[~keep].any()


def test_odd_sizes_are_padded_and_cropped_back() -> None:
    net = make("two_heads")
    x = torch.rand(1, 1, 50, 70)
    assert pad_to_stride(x, 32).shape[-2:] == (64, 96)
    _, masks = GatedFlow.eager(net)(x)
    assert masks.shape == (1, 3, 50, 70)


def test_binarize_applies_pixel_area_and_gate() -> None:
    probs = torch.zeros(2, 2, 4, 4)
    probs[:, 0, :2, :2] = 0.7  # 4 pixels of class 0
    probs[:, 1, :, :] = 0.55  # 16 pixels of class 1
    gate = torch.tensor([[0.9, 0.1], [0.2, 0.1]])
    out = binarize(gate, probs, Thresholds(0.5, [0.6, 0.5], [5, 0]))
    assert not out[0, 0].any()  # 4 pixels < min area 5
    assert out[0, 1].all()
    assert not out[1].any()  # the gate rejected image 1
    out = binarize(gate, probs, Thresholds(0.0, [0.6, 0.6], [0, 0]))
    assert out[:, 0].sum() == 8 and not out[:, 1].any()


def test_thresholds_from_dict_checks_lengths() -> None:
    assert Thresholds.from_dict({"pixel": 0.4}, 3).pixel == [0.4] * 3
    with pytest.raises(ValueError, match="thresholds.min_area: 2 values for 3 classes"):
        Thresholds.from_dict({"min_area": [1, 2]}, 3)


def test_threshold_search_matches_brute_force() -> None:
    """The count-based search finds the same optimum as scoring every grid point directly."""
    gen = torch.Generator().manual_seed(0)
    n, k = 6, 2
    truth = torch.zeros(n, k, 16, 16, dtype=torch.bool)
    truth[0, 0, 2:8, 2:8] = True
    truth[2, 1, :, 10:] = True
    truth[3, 0, 5:7, :] = True
    probs = (truth.float() * 0.5 + torch.rand(n, k, 16, 16, generator=gen) * 0.6).clamp(0, 1)
    gate = torch.rand(n, k, generator=gen)
    gate[[0, 2, 3]] += 0.5
    search = ThresholdSearch(pixel_grid=(0.4, 0.6, 0.8), area_grid=(0, 20, 60), gate_cuts=3)
    search.update(gate[:3], probs[:3], truth[:3])
    search.update(gate[3:], probs[3:], truth[3:])
    best, score = search.best()
    brute = -1.0
    assert len(search.gate_candidates()) == 4  # 0 and 3 of the 5 cuts between 6 scores
    for g in search.gate_candidates():
        for per_class in itertools.product(
            itertools.product(search.pixel_grid, search.area_grid), repeat=k
        ):
            t = Thresholds(g, [p for p, _ in per_class], [a for _, a in per_class])
            brute = max(brute, float(pair_dice(binarize(gate, probs, t), truth).mean()))
    assert score == pytest.approx(brute, abs=1e-9)
    assert float(pair_dice(binarize(gate, probs, best), truth).mean()) == pytest.approx(score)


def test_threshold_search_cuts_between_badly_calibrated_gate_scores() -> None:
    """A gate that orders strips right but scores them all within 0.13-0.32 still gets a
    threshold that rejects the defect-free ones: the search cuts between observed scores."""
    n, k = 8, 1
    truth = torch.zeros(n, k, 8, 8, dtype=torch.bool)
    truth[:3, 0, 2:6, 2:6] = True
    probs = truth.float() * 0.9
    gate = torch.tensor([0.30, 0.31, 0.32, 0.13, 0.14, 0.15, 0.16, 0.17]).view(n, k)
    search = ThresholdSearch(pixel_grid=(0.5,), area_grid=(0,))
    search.update(gate, probs, truth)
    best, score = search.best()
    assert score == pytest.approx(1.0)
    assert best.gate == pytest.approx(0.235)  # midway between the two groups
    assert float(pair_dice(binarize(gate, probs, best), truth).mean()) == pytest.approx(1.0)
    many = ThresholdSearch(gate_cuts=5)
    many.update(torch.rand(50, 1), torch.zeros(50, 1, 4, 4), torch.zeros(50, 1, 4, 4))
    assert len(many.gate_candidates()) == 6


def test_gate_scores() -> None:
    scores = gate_scores(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 0, 1, 0]), 0.5)
    assert scores == {
        "gate_accuracy": 0.5,
        "gate_precision": 0.5,
        "gate_recall": 0.5,
        "gate_f1": 0.5,
        "gate_auroc": 0.75,  # 3 of the 4 (defective, clean) pairs ordered right
        "gate_false_alarm_at_99_recall": 0.5,  # the cut at 0.2 passes the clean 0.8
    }
    one_kind = gate_scores(np.array([0.9, 0.1]), np.array([0, 0]), 0.5)
    assert "gate_auroc" not in one_kind and "gate_false_alarm_at_99_recall" not in one_kind


@pytest.mark.parametrize("design", ["separate", "two_heads", "shared_backbone"])
def test_onnx_flow_matches_eager(design: str, tmp_path) -> None:
    net = make(design, seed=1)
    folder = export_onnx(net, tmp_path / design)
    x = torch.rand(3, 1, 64, 160)
    eager_gate, eager_masks = GatedFlow.eager(net)(x, gate_threshold=0.0)
    onnx_gate, onnx_masks = GatedFlow.onnx(folder, threads=1)(x, gate_threshold=0.0)
    assert torch.allclose(onnx_gate, eager_gate, atol=1e-4)
    assert torch.allclose(onnx_masks, eager_masks, atol=1e-4)


def test_downscaling_averages_blocks_so_thin_lines_survive() -> None:
    """At 1/4 bilinear sampling reads 2 of every 4 rows and loses a 1-pixel scratch; the
    gate's block average keeps it (at a quarter of its contrast). Pairs scale H and W apart."""
    x = torch.zeros(1, 1, 16, 32)
    x[..., 4, :] = 1.0  # a 1-pixel horizontal scratch on a row bilinear never reads
    bilinear = torch.nn.functional.interpolate(x, scale_factor=0.25, mode="bilinear")
    assert bilinear.max() == 0
    assert torch.allclose(rescale(x, 0.25)[..., 1, :], torch.full((8,), 0.25))
    wide = rescale(x, (0.5, 0.125))
    assert wide.shape[-2:] == (8, 4)
    assert torch.allclose(wide[..., 2, :], torch.full((4,), 0.5))
    assert rescale(x, 1.0) is x


def test_separate_gate_is_trained_per_cell_of_its_grid() -> None:
    """The `separate` gate scores cells; its image logit is the best cell, and its targets
    are the masks max-pooled onto the cells (other designs: one target per image)."""
    net = make("separate")
    x = torch.rand(2, 1, 64, 192)
    out = net(x)
    grid = out["gate_grid"]
    assert grid.shape[:2] == (2, 3)
    assert torch.allclose(out["gate_logits"], grid.amax(dim=(2, 3)))
    masks = torch.zeros(2, 3, 64, 192)
    masks[0, 1, :4, :4] = 1  # top-left corner of image 0, class 1
    logits, targets = gate_targets(out, masks, net.gate.cell)
    assert logits.shape == targets.shape == grid.shape
    assert targets[0, 1, 0, 0] == 1 and targets.sum() == 1
    shared = make("shared_backbone")(x)
    logits, targets = gate_targets(shared, masks)
    assert targets.tolist() == [[0, 1, 0], [0, 0, 0]]


def test_gate_cells_are_labelled_by_the_pixels_they_cover() -> None:
    """At scale [0.5, 0.125] a cell covers 64 x 256 input pixels; a 256 x 320 training crop
    gives a 4 x 2 grid whose second column holds only pixels 256..319. A defect at pixel 200
    is in the first column (an even split of the crop over 2 columns would put it in the
    second), and one at the bottom right corner is in the last cell."""
    torch.manual_seed(0)
    net = Segmenter(3, design="separate", **{**TINY, "gate_scale": [0.5, 0.125]}).eval()
    assert net.gate.cell == (64, 256)
    x = torch.rand(1, 1, 256, 320)
    with torch.no_grad():
        out = net(x)
    assert out["gate_grid"].shape[-2:] == (4, 2)
    masks = torch.zeros(1, 3, 256, 320)
    masks[0, 0, 100, 200] = 1
    masks[0, 2, 255, 319] = 1
    _, targets = gate_targets(out, masks, net.gate.cell)
    assert targets.shape == (1, 3, 4, 2)
    assert targets[0, 0].nonzero().tolist() == [[1, 0]]
    assert targets[0, 2].nonzero().tolist() == [[3, 1]]
    assert targets.sum() == 2
    shallow = Segmenter(3, design="separate", **TINY, gate_scale=[0.5, 0.125], gate_depth=3)
    assert shallow.gate.cell == (16, 64)  # stride 8: a 16 x 5 grid on the same crop
    with torch.no_grad():
        grid = shallow.eval()(x)["gate_grid"]
    _, targets = gate_targets({"gate_grid": grid}, masks, shallow.gate.cell)
    assert grid.shape[-2:] == (16, 5)
    assert targets[0, 0].nonzero().tolist() == [[6, 3]]  # pixel (100, 200)
    assert targets[0, 2].nonzero().tolist() == [[15, 4]]
