"""Steel line budget: strips per second for each gate design, eager and ONNX Runtime.

Reproduces the original project's table (2,500 strips, defect-free set vs 50/50 set, three
designs) on this CPU, step by step, so each engineering step shows what it bought:

    python benchmarks/bench_steel.py --bundle models/steel/bundle.pt \
        --bundle models/steel_two_heads/bundle.pt --bundle models/steel_shared/bundle.pt

Each bundle is a trained steel model (`defects.train task=steel model.design=...`); the
gate decisions are the model's own, so the defect-free speed-up is real, not assumed.
Strips are synthetic 1600x256 (generated here, in memory, from a seed; the same strips for
every row). Gated rows time the product's predictor (`defects.load`, eager or ONNX Runtime:
array decode, tensor conversion, the gated flow, thresholds, masks as numpy), not PNG
decoding. "ungated" is the segmenter alone (no gate at all, the predictor's flow without
its gate); "x ungated" compares each row with the ungated row of the same backend and batch
size. Dice is the Kaggle mean over the validation split of `--data`, scored by the kind's
evaluation through each predictor, against the eager predictor of the same bundle.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

import defects
from defects.data.segmentation import SegmentationDataModule
from defects.data.synthetic.steel import render_steel_strip
from defects.kinds import get_kind
from defects.kinds.gated.predictor import SegmentationPredictor


def make_strips(count: int, defective_fraction: float, seed: int) -> list[np.ndarray]:
    """`count` synthetic strips, the first `defective_fraction` of them with 1-2 defects."""
    rng = np.random.default_rng(seed)
    n_defective = int(round(count * defective_fraction))
    strips = []
    for k in range(count):
        classes = []
        if k < n_defective:
            n = int(rng.integers(1, 3))
            classes = sorted(int(c) for c in rng.choice([1, 2, 3, 4], n, p=[0.12, 0.03, 0.7, 0.15]))
        image, _ = render_steel_strip(np.random.default_rng([seed, k]), 1600, 256, classes)
        strips.append(image)
    return strips


def run(
    predictor: SegmentationPredictor, gated: bool, strips: list[np.ndarray], batch: int
) -> tuple[float, float]:
    """Seconds for all strips and the share the gate let through."""
    passed = 0
    start = time.perf_counter()
    for i in range(0, len(strips), batch):
        chunk = strips[i : i + batch]
        if not gated:  # the segmenter alone: the baseline the gate must beat
            x = torch.from_numpy(np.stack(chunk)).float().div_(255.0).unsqueeze(1)
            (predictor.flow.ungated(x) >= 0.5).to(torch.uint8)
            passed += len(chunk)
        else:
            results = predictor.predict_batch(chunk)
            passed += sum(r.gate >= predictor.tuned.gate for r in results)
    return time.perf_counter() - start, passed / len(strips)


def dice_of(predictor: SegmentationPredictor, data: Path) -> float:
    dm = SegmentationDataModule(str(data), predictor.class_names, num_workers=0)
    return get_kind(predictor.kind).evaluate(predictor, dm, "valid").metrics["val/dice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="trained steel bundle")
    parser.add_argument("--count", type=int, default=200, help="strips per set (original: 2500)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--data", default="data/steel", help="valid split scores Dice")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    clean = make_strips(args.count, 0.0, args.seed)
    mixed = make_strips(args.count, 0.5, args.seed + 1)
    print(
        f"{args.count} strips per set, 1600x256, batch {args.batch}, {args.threads} threads, "
        f"torch {torch.__version__}"
    )
    header = (
        "| design | step | defect-free s | img/s | x ungated | gate pass | 50/50 s | img/s "
        "| x ungated | gate pass | val Dice | ΔDice |"
    )
    print(header)
    print("|" + "---|" * 12)
    for path in args.bundle:
        eager = defects.load(path)
        onnx = defects.load(path, backend="onnx", threads=args.threads)
        design = eager.flow.design
        rows = [
            ("ungated eager, batch 1", eager, False, 1),
            ("gated eager, batch 1", eager, True, 1),
            ("ungated ONNX Runtime, batch 1", onnx, False, 1),
            ("gated ONNX Runtime, batch 1", onnx, True, 1),
            (f"ungated ONNX Runtime, batch {args.batch}", onnx, False, args.batch),
            (f"gated ONNX Runtime, batch {args.batch}", onnx, True, args.batch),
        ]
        reference = dice_of(eager, Path(args.data))
        dice_onnx = dice_of(onnx, Path(args.data))
        ungated: dict[tuple, tuple[float, float]] = {}  # (backend, batch): (clean, mixed) s
        for step, predictor, gated, batch in rows:
            run(predictor, gated, clean[: max(batch, 2)], batch)  # warm-up
            t_clean, p_clean = run(predictor, gated, clean, batch)
            t_mixed, p_mixed = run(predictor, gated, mixed, batch)
            if not gated:
                ungated[predictor.backend, batch] = (t_clean, t_mixed)
            base_clean, base_mixed = ungated[predictor.backend, batch]
            dice = dice_onnx if predictor is onnx else reference
            print(
                f"| {design} | {step} | {t_clean:.1f} | {len(clean) / t_clean:.1f} | "
                f"{base_clean / t_clean:.2f} | {p_clean:.0%} | {t_mixed:.1f} | "
                f"{len(mixed) / t_mixed:.1f} | {base_mixed / t_mixed:.2f} | {p_mixed:.0%} "
                f"| {dice:.4f} | {dice - reference:+.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
