"""The report figures: which examples they pick (hand-made candidates, then a detection and a
segmentation split whose every outcome is known), what they are titled, that every figure is
written as a PNG worth opening under the names dvc.yaml lists as the stages' plots, and that
the threshold curves are the ones the tuning chose from. Stand-in networks, no training: the
real runs' figures are checked where those runs already happen (test_train_weld.py,
test_train_steel.py, test_mlflow_server.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from defects.examples import Candidate, Panel, Slot, pick_examples, picked_indices
from defects.kinds.base import Report
from defects.kinds.detection import evaluate as boxes
from defects.kinds.detection.evaluate import SCORE_GRID, box_candidates
from defects.kinds.detection.predictor import DetectionPredictor
from defects.kinds.gated import evaluate as strips
from defects.kinds.gated.evaluate import strip_candidate
from defects.kinds.gated.thresholds import ThresholdSearch
from defects.plots import plot_threshold_curves
from defects.results import Detections
from tests.conftest import assert_png

ROOT = Path(__file__).resolve().parents[1]
BEST = Slot("hit", True, "{group}: best hit (IoU {value:.2f})", "{group}: no box found")
WORST = Slot("miss", False, "{group}: worst miss (IoU {value:.2f})", "{group}: no box missed")
ALARM = Slot("false_alarm", True, "{group}: false alarm ({value:.2f})", "{group}: no false alarm")
CLEAN = Slot("clean", True, "clean ({value:.2f})", "no clean image left empty")
HIGH = Slot("defective", True, "highest Dice ({value:.2f})", "no defective strip")
LOW = Slot("defective", False, "lowest Dice ({value:.2f})", "no second defective strip")


def picks(rows: list[list[Panel]]) -> list[list[tuple[int, float] | None]]:
    """(image, value) of each panel, None where the slot is empty."""
    return [
        [(p.candidate.index, round(p.candidate.value, 4)) if p.candidate else None for p in row]
        for row in rows
    ]


def test_picks_best_worst_and_most_confident_per_class() -> None:
    candidates = [
        Candidate(0, "crack", "hit", 0.61),
        Candidate(1, "crack", "hit", 0.93),
        Candidate(1, "crack", "miss", 0.12),
        Candidate(2, "crack", "miss", 0.40),
        Candidate(2, "pore", "hit", 0.70),
        Candidate(3, "pore", "false_alarm", 0.55),
        Candidate(4, "pore", "false_alarm", 0.91),
        Candidate(5, "", "clean", 0.20),
        Candidate(6, "", "clean", 0.35),
    ]
    rows = pick_examples(
        candidates,
        [("crack", (BEST, WORST, ALARM)), ("pore", (BEST, WORST, ALARM)), ("", (CLEAN,))],
    )
    assert picks(rows) == [
        [(1, 0.93), (1, 0.12), None],
        [(2, 0.70), None, (4, 0.91)],
        [(6, 0.35)],
    ]
    assert rows[0][1].title == "crack: worst miss (IoU 0.12)"
    assert [p.title for p in rows[1]][1:] == ["pore: no box missed", "pore: false alarm (0.91)"]
    assert picked_indices(rows) == [1, 2, 4, 6]


def test_ties_go_to_the_earlier_image() -> None:
    candidates = [
        Candidate(7, "", "defective", 0.5),
        Candidate(3, "", "defective", 0.5),
        Candidate(5, "", "defective", 0.5),
    ]
    rows = pick_examples(candidates, [("", (HIGH, LOW))])
    assert picks(rows) == [[(3, 0.5), (5, 0.5)]]  # the lowest is another strip


def test_a_split_without_clean_images_or_false_alarms_says_so() -> None:
    """One defective strip, no clean one: it is shown once, the other panels are empty and
    titled with what is missing, and nothing raises."""
    rows = pick_examples([Candidate(0, "", "defective", 0.8)], [("", (HIGH, LOW, ALARM, CLEAN))])
    assert picks(rows) == [[(0, 0.8), None, None, None]]
    assert [p.title for p in rows[0]] == [
        "highest Dice (0.80)",
        "no second defective strip",
        ": no false alarm",
        "no clean image left empty",
    ]
    assert picks(pick_examples([], [("a", (BEST, WORST))])) == [[None, None]]
    assert picked_indices(pick_examples([], [("", (CLEAN,))])) == []


def test_box_candidates_name_each_box_by_what_happened_to_it() -> None:
    """A crack found (IoU 100/120), a pore missed (its only detection is under the score
    threshold: IoU 0 with what was delivered), a delivered crack on nothing (a false alarm);
    an image with no box and nothing delivered is clean, ranked by its best score."""
    names = ["crack", "pore"]
    det = Detections(
        boxes=np.array([[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]], np.float32),
        labels=["crack", "crack", "pore"],
        class_ids=np.array([0, 0, 1]),
        scores=np.array([0.9, 0.8, 0.3]),
        class_names=names,
    )
    truth = {
        "boxes": np.array([[0, 0, 10, 12], [100, 100, 110, 110]], np.float32),
        "class_ids": np.array([0, 1]),
    }
    found = box_candidates(3, det, truth, score_threshold=0.5)
    assert [(c.group, c.outcome, c.box) for c in found] == [
        ("crack", "hit", (0.0, 0.0, 10.0, 12.0)),
        ("pore", "miss", (100.0, 100.0, 110.0, 110.0)),
        ("crack", "false_alarm", (50.0, 50.0, 60.0, 60.0)),
    ]
    assert [c.value for c in found] == pytest.approx([100 / 120, 0.0, 0.8])
    assert {c.index for c in found} == {3}
    empty = {"boxes": np.zeros((0, 4), np.float32), "class_ids": np.zeros(0, np.int64)}
    faint = Detections(det.boxes[2:], ["pore"], det.class_ids[2:], det.scores[2:], names)
    assert box_candidates(4, faint, empty, 0.5) == [Candidate(4, "", "clean", 0.3)]


def test_strip_candidates_rank_defective_strips_by_dice() -> None:
    """Dice over the classes in truth or prediction (an empty-empty class does not count)."""
    target = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    target[0, 0, :2] = True  # 8 pixels of class 0
    pred = target.clone()
    pred[0, 0, 0] = False  # 4 of them found
    pred[0, 1, 3, 3] = True  # and a pixel of class 1 that is not there
    found = strip_candidate(2, pred, target, 0.7)
    assert (found.outcome, found.value) == ("defective", pytest.approx((8 / 12 + 0.0) / 2))
    clean = torch.zeros_like(target)
    assert strip_candidate(5, pred & ~target, clean, 0.9) == Candidate(5, "", "false_alarm", 0.9)
    assert strip_candidate(6, clean, clean, 0.2) == Candidate(6, "", "clean", 0.2)


# ------------------------------------------------------------------ whole reports

FIGURES = ("predictions", "per_class", "thresholds")


def dvc_plots(stage: str, task: str) -> set[str]:
    """Names of the files a dvc.yaml stage lists as plots under plots/<task>/."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    entries = [e if isinstance(e, str) else next(iter(e)) for e in stages[stage]["plots"]]
    folder = f"plots/{task}/"
    return {e[len(folder) :] for e in entries if e.startswith(folder)}


def write_reports(
    evaluation: Any, predictor: Any, data: Any, names: list[str], plots: Path
) -> tuple[Path, list[Report]]:
    """The valid and test reports of `data`, written as train and evaluate write them."""
    reports = []
    for split in ("valid", "test"):
        report = evaluation.evaluate(predictor, data, split)
        evaluation.write_report(report, names, plots.parent / f"{split}.json", plots)
        reports.append(report)
    return plots, reports


def assert_stage_plots(plots: Path, task: str, figures: tuple[str, ...]) -> None:
    """train_<task> lists the val_ files written, evaluate_<task> the test_ ones, and each
    figure is a PNG worth opening."""
    written = {p.name for p in plots.iterdir()}
    for stage, prefix in (("train", "val"), ("evaluate", "test")):
        mine = {name for name in written if name.startswith(f"{prefix}_")}
        assert dvc_plots(f"{stage}_{task}", task) == mine, stage
        for figure in figures:
            assert_png(plots / f"{prefix}_{figure}.png", 250, 200)


# A detection split whose every outcome is known (64 x 96 grey images, score threshold 0.5):
#   0: a crack found (truth 10..30, found 10..32: IoU 20x20 / 20x22)
#   1: a crack found badly (IoU 15x15 / 575 = 0.39 < 0.5): a miss, and its box a false alarm
#   2: a pore not found at all (IoU 0)
#   3: no defect, a pore found at 0.97 (a false alarm)
#   4: no defect, a pore at 0.2 (under the threshold: a clean image left empty, top score 0.2)
#   5: no defect, nothing found (clean, top score 0)
NAMES = ["crack", "pore"]
TRUTH = {
    0: [(0, (10, 10, 30, 30))],
    1: [(0, (5, 5, 25, 25))],
    2: [(1, (40, 20, 60, 40))],
}
FOUND = {
    0: [(0, (10, 10, 30, 32), 0.92)],
    1: [(0, (10, 10, 30, 30), 0.83)],
    3: [(1, (50, 30, 70, 50), 0.97)],
    4: [(1, (20, 20, 40, 40), 0.2)],
}


def boxes_of(rows: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, xyxy boxes) of rows (class id, box, ...)."""
    ids = np.array([r[0] for r in rows], np.int64)
    return ids, np.array([r[1] for r in rows], np.float32).reshape(-1, 4)


def detection_image(index: int) -> np.ndarray:
    """Grey texture with the true defects drawn bright; pixel (0, 0) holds the index, which
    is how the stand-in network below knows which image it sees."""
    rng = np.random.default_rng(index)
    image = rng.integers(60, 120, (64, 96)).astype(np.uint8)
    for _, (x1, y1, x2, y2) in TRUTH.get(index, []):
        image[y1:y2, x1:x2] = 220
    image[0, 0] = index
    return image


def stand_in_detector(tensors: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The runner of a DetectionPredictor: the boxes of FOUND for the image it is given."""
    index = round(float(tensors[0][0, 0, 0]) * 255)
    rows = FOUND.get(index, [])
    ids, xyxy = boxes_of(rows)
    return [
        {
            "boxes": torch.from_numpy(xyxy),
            "labels": torch.from_numpy(ids) + 1,
            "scores": torch.tensor([r[2] for r in rows], dtype=torch.float32),
        }
    ]


def detection_predictor(tuning: list[dict[str, Any]] | None = None) -> DetectionPredictor:
    meta = {
        "model": {"kind": "fasterrcnn"},
        "class_names": NAMES,
        "thresholds": {"score": 0.5},
        "input": {"channels": 1},
        **({"tuning": tuning} if tuning else {}),
    }
    return DetectionPredictor(meta, stand_in_detector)


def detection_data() -> SimpleNamespace:
    images = [detection_image(k) for k in range(6)]
    truths = []
    for k in range(6):
        ids, xyxy = boxes_of([(c, b) for c, b in TRUTH.get(k, [])])
        truths.append({"boxes": xyxy, "class_ids": ids})
    samples = [SimpleNamespace(image=image, index=k) for k, image in enumerate(images)]
    return SimpleNamespace(
        eval_samples=lambda split: samples, truth=lambda sample: truths[sample.index]
    )


def test_detection_tuning_keeps_the_f1_curve_it_chose_from() -> None:
    """Delivered at a cut: .05-.20 all four boxes (1 hit, 3 false), .25-.80 three, .85-.90
    two (F1 .4, the best; ties keep the higher cut), .95 only the false one (F1 0)."""
    thresholds, (curve,) = boxes.tune(detection_predictor(), detection_data())
    assert thresholds == {"score": 0.9}
    assert curve["chosen"] == 0.9 and curve["x"] == list(SCORE_GRID)
    f1 = dict(zip(curve["x"], curve["series"]["F1"], strict=True))
    assert f1[0.2] == pytest.approx(2 / 7, abs=1e-6) and f1[0.5] == pytest.approx(1 / 3, abs=1e-6)
    assert f1[0.85] == f1[0.9] == pytest.approx(0.4) and f1[0.95] == 0.0
    assert curve["series"]["precision"][SCORE_GRID.index(0.9)] == 0.5


@pytest.fixture(scope="module")
def detection_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Report]]:
    """valid and test reports of the known split, written as train and evaluate write them."""
    data = detection_data()
    _, curves = boxes.tune(detection_predictor(), data)
    predictor = detection_predictor(curves)
    return write_reports(boxes, predictor, data, NAMES, tmp_path_factory.mktemp("weld") / "plots")


def test_detection_examples_are_the_best_and_worst_per_class(detection_reports) -> None:
    _, (_, report) = detection_reports
    rows = report.extras["examples"]
    assert picks(rows) == [
        [(0, 0.9091), (1, 0.3913), (1, 0.83)],  # crack: best hit, worst miss, false alarm
        [None, (2, 0.0), (3, 0.97)],  # pore: never found, missed outright, found on nothing
        [(4, 0.2)],  # the clean image that came closest to a false alarm
    ]
    assert [[p.title for p in row] for row in rows] == [
        [
            "crack: best hit (IoU 0.91)",
            "crack: worst miss (IoU 0.39)",
            "crack: false alarm (score 0.83)",
        ],
        ["pore: no box found", "pore: worst miss (IoU 0.00)", "pore: false alarm (score 0.97)"],
        ["clean image, left empty (top score 0.20)"],
    ]
    # each panel's box is the one it is about: the truth box of a miss, the found box of an alarm
    assert rows[1][1].candidate.box == (40.0, 20.0, 60.0, 40.0)
    assert rows[1][2].candidate.box == (50.0, 30.0, 70.0, 50.0)
    assert sorted(report.extras["pictures"]) == [0, 1, 2, 3, 4]  # decoded: the shown ones only
    image, _, shown = report.extras["pictures"][4]
    assert image[0, 0] == 4 and len(shown) == 0  # drawn as delivered: its 0.2 box is under 0.5


@pytest.mark.parametrize("task", ["weld", "winding"])  # both box kinds share this report
def test_detection_report_writes_every_figure_dvc_lists(detection_reports, task: str) -> None:
    assert_stage_plots(detection_reports[0], task, (*FIGURES, "confusion_matrix", "pr_curve"))


# A segmentation split (3 classes, 32 x 96 strips, gate threshold 0.5):
#   0: class a, found whole (Dice 1)        1: class b, half found (Dice 2/3)
#   2: class a, missed (Dice 0)             3: clean, a blob of c found (gate 0.9)
#   4: clean, left empty (gate 0.3)         5: clean, left empty (gate 0.1)
CLASSES = ["a", "b", "c"]


def strip_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    truth = np.zeros((6, 3, 32, 96), bool)
    pred = np.zeros_like(truth)
    truth[0, 0, 8:24, 10:40] = pred[0, 0, 8:24, 10:40] = True
    truth[1, 1, 4:28, 50:80] = True
    pred[1, 1, 4:16, 50:80] = True
    truth[2, 0, 10:20, 60:90] = True
    pred[3, 2, 5:15, 5:25] = True
    images = np.stack([np.full((32, 96), 90 + 20 * k, np.uint8) for k in range(6)])
    images[truth.any(1)] = 230
    return images, truth, pred, [0.95, 0.8, 0.7, 0.9, 0.3, 0.1]


def strip_predictor(curves: list[dict[str, Any]]) -> SimpleNamespace:
    images, _, pred, gate = strip_case()
    return SimpleNamespace(
        class_names=CLASSES,
        tuned=SimpleNamespace(gate=0.5),
        thresholds={"gate": 0.5},
        meta={"tuning": curves},
        predict_many=lambda indices: [
            (images[i], SimpleNamespace(masks=pred[i], gate=gate[i])) for i in indices
        ],
    )


@pytest.fixture(scope="module")
def strip_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Report]]:
    _, truth, pred, gate = strip_case()
    search = ThresholdSearch(pixel_grid=(0.5,), area_grid=(0, 64))
    search.update(
        torch.tensor(gate)[:, None], torch.from_numpy(pred).float(), torch.from_numpy(truth)
    )
    thresholds, _ = search.best()
    predictor = strip_predictor(search.curves(thresholds, CLASSES))
    data = SimpleNamespace(
        eval_samples=lambda split: [SimpleNamespace(image=i) for i in range(6)],
        truth=lambda sample: truth[sample.image],
    )
    return write_reports(
        strips, predictor, data, CLASSES, tmp_path_factory.mktemp("steel") / "plots"
    )


def test_segmentation_examples_are_the_highest_and_lowest_dice_strips(strip_reports) -> None:
    _, (_, report) = strip_reports
    rows = report.extras["examples"]
    assert picks(rows) == [[(0, 1.0), (2, 0.0), (3, 0.9), (4, 0.3)]]
    assert [p.title for p in rows[0]] == [
        "highest Dice of the defective strips (Dice 1.00)",
        "lowest Dice of the defective strips (Dice 0.00)",
        "false alarm on a clean strip (gate 0.90)",
        "clean strip, correctly left empty (gate 0.30)",
    ]
    assert sorted(report.extras["pictures"]) == [0, 2, 3, 4]


def test_segmentation_report_writes_every_figure_dvc_lists(strip_reports) -> None:
    assert_stage_plots(strip_reports[0], "steel", (*FIGURES, "pr_curve"))


@pytest.mark.parametrize("objective", ["kaggle_dice", "defective_dice", "recall_at_fpr"])
def test_gated_curves_are_what_the_search_chose_from(objective: str) -> None:
    """The gate's curve holds the objective at every gate tried, the chosen gate where it
    peaks (the highest of equals); per class, the pixel and min-area curves run through the
    chosen point and peak there. recall_at_fpr: false alarms against the gate, with the
    recall to reach."""
    rng = np.random.default_rng(5)
    n, k = 24, 2
    truth = np.zeros((n, k, 16, 48), bool)
    for i in range(0, n, 2):
        truth[i, i % k, 4:12, 8 : 8 + 4 * (i % 5 + 1)] = True
    probs = np.clip(truth * 0.55 + rng.random(truth.shape) * 0.5, 0, 1).astype(np.float32)
    gate = np.clip(truth.reshape(n, -1).any(1) * 0.4 + rng.random(n) * 0.6, 0, 1)
    search = ThresholdSearch(objective=objective, target_recall=0.9, area_grid=(0, 16, 64, 256))  # type: ignore[arg-type]
    search.update(torch.tensor(gate)[:, None], torch.from_numpy(probs), torch.from_numpy(truth))
    chosen, score = search.best()
    curves = search.curves(chosen, ["x", "y"])
    assert [(c["parameter"], c["group"]) for c in curves] == [
        ("gate threshold", ""),
        *((p, name) for name in "xy" for p in ("pixel threshold", "min area (px)")),
    ]
    gate_curve = curves[0]
    assert gate_curve["chosen"] == pytest.approx(chosen.gate, abs=1e-6)
    at = gate_curve["x"].index(gate_curve["chosen"])
    if objective == "recall_at_fpr":
        assert gate_curve["target"] == {"series": "image recall", "value": 0.9}
        assert gate_curve["series"]["image recall"][at] >= 0.9
        assert 1.0 - gate_curve["series"]["image false alarm"][at] == pytest.approx(score)
    else:
        values = gate_curve["series"][objective]
        assert values[at] == pytest.approx(score, abs=1e-6) == pytest.approx(max(values), abs=1e-6)
        assert all(v < values[at] for v in values[at + 1 :])  # ties keep the higher gate
    for c, (pixel, area) in enumerate(zip(curves[1::2], curves[2::2], strict=True)):
        assert pixel["chosen"] == chosen.pixel[c] and area["chosen"] == chosen.min_area[c]
        assert area["grid"] is True and area["x"] == [0, 16, 64, 256]
        for curve in (pixel, area):
            (values,) = curve["series"].values()
            assert values[curve["x"].index(curve["chosen"])] == pytest.approx(max(values))


def test_a_model_without_a_search_gets_a_figure_saying_so(tmp_path: Path) -> None:
    assert_png(plot_threshold_curves([], tmp_path / "t.png", "no search"), 300, 150, 0.005)


def test_pipe_bars_every_row_of_its_iou_table(tmp_path: Path) -> None:
    """The pipe's evaluate figure: a bar per row and class (an absent class, None, drawn as
    n/a); dvc lists it as evaluate_pipe's plot."""
    from defects.pipe.stages import plot_iou_rows

    report = {
        "split": "test",
        "classes": ["a", "b"],
        "models": {
            "baseline": {"a": 0.4, "b": None, "mean": 0.4},  # b absent from truth and masks
            "final": {"a": 0.6, "b": 0.2, "mean": 0.4},
        },
        "training_masks": {"box": {"a": 0.3, "b": 0.5, "mean": 0.4}},
    }
    out = plot_iou_rows(report, tmp_path / "test_iou_per_class.png")
    assert_png(out)
    assert dvc_plots("evaluate_pipe", "pipe") == {out.name}
