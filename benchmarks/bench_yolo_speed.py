"""YOLO inference speed at 640: our predictor (eager, ONNX) vs Ultralytics' own `predict`.

    python benchmarks/bench_yolo_speed.py                          # untrained yolo12n, 640
    python benchmarks/bench_yolo_speed.py --bundle models/winding/bundle.pt --imgsz 640

All three run the same network weights on the same in-memory RGB frames (synthetic winding
frames, `--width` x `--height`, default 640x480), one frame per call, with the same NMS
settings (conf 0.001, IoU 0.7, 300 detections, class-aware) and image -> boxes in original
pixels timed end to end. Ultralytics gets the frame as a numpy array (BGR, as it expects: the
channel flip is on its side of the clock) and its default letterbox for PyTorch models
(`rect=True`, `auto`: padded only to a stride multiple, so a 640x480 frame is 640x480 for it,
640x640 for our fixed-size graph); "square" is its predict with `rect=False`, the same
640x640 canvas as ours. Passes rotate the order of the three and the ratios are medians of
per-round ratios, so load drift on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP
for key, value in {"HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}.items():
    os.environ.setdefault(key, value)
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import defects  # noqa: E402
from defects.bundle import load_bundle, save_bundle  # noqa: E402
from defects.kinds.yolo import adapter  # noqa: E402
from defects.kinds.yolo.kind import KIND  # noqa: E402


def frames(width: int, height: int, count: int, folder: Path) -> list[np.ndarray]:
    """Test-split frames of one synthetic winding video at the asked size."""
    from defects.data.images import decode_image
    from defects.data.synthetic import generate_winding_dataset

    root = folder / "frames"
    generate_winding_dataset(
        root,
        n_train=1,
        n_valid=0,
        n_test=0,
        frames_per_video=count,
        every_k=1,
        width=width,
        height=height,
        class_names=["gap", "crossed_turn", "loose_loop", "bulge"],
    )
    paths = sorted((root / "train" / "images").iterdir())[:count]
    return [decode_image(p, channels=3) for p in paths]


def bundle_at(path: str | None, imgsz: int, folder: Path, rect: bool = True) -> Path:
    """The bundle with its letterbox size set to `imgsz` and the rectangular letterbox on or
    off (an untrained yolo12n without a bundle)."""
    if path is None:
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        with initialize_config_dir(str(REPO / "defects" / "configs"), version_base="1.3"):
            cfg = compose("config", ["task=winding", "logger=none"])
        torch.manual_seed(0)
        bundle = KIND.bundle(instantiate(cfg.model, _convert_="all"), cfg)
        bundle["task"] = "winding"
    else:
        bundle = load_bundle(path)
    bundle["model"]["postprocess"].update(imgsz=imgsz, rect=rect)
    bundle["model"]["postprocess"].setdefault("stride", 32)
    bundle["input"]["size"] = imgsz
    keep = ("task", "model", "state_dict", "class_names", "thresholds", "input")
    return save_bundle(folder / "bundle.pt", **{k: bundle[k] for k in keep})


def timed(runners: dict[str, Callable[[np.ndarray], object]], images, rounds: int) -> dict:
    for run in runners.values():  # warm-up
        for image in images:
            run(image)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for image in images:
                runners[name](image)
            rates[name].append(len(images) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default=None, help="a trained yolo bundle")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--count", type=int, default=10, help="frames")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--square", action="store_true", help="our letterbox: full square")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = frames(args.width, args.height, args.count, folder)
        path = bundle_at(args.bundle, args.imgsz, folder, rect=not args.square)
        eager = defects.load(path)
        onnx = defects.load(path, backend="onnx", threads=args.threads)
        bundle = load_bundle(path)
        post = bundle["model"]["postprocess"]
        theirs = adapter.reference_model(
            KIND.network(bundle).model, bundle["class_names"], "yolo12n.yaml"
        )
        options = dict(
            imgsz=args.imgsz,
            conf=post["conf"],
            iou=post["iou"],
            max_det=post["max_det"],
            device="cpu",
            verbose=False,
        )
        runners = {
            "ours eager": lambda image: eager.detect_all([image]),
            "ours ONNX": lambda image: onnx.detect_all([image]),
            "Ultralytics predict": lambda image: theirs.predict(image[..., ::-1], **options),
            "Ultralytics predict, square": lambda image: theirs.predict(
                image[..., ::-1], rect=False, **options
            ),
        }
        rates = timed(runners, images, args.rounds)
        torch.set_num_threads(args.threads)  # Ultralytics' predictor may change it
    base = rates["Ultralytics predict"]
    print(
        f"{len(images)} frames {args.width}x{args.height}, letterbox {args.imgsz}, batch 1, "
        f"{args.threads} threads, medians of {args.rounds} rotating rounds"
    )
    print("| predictor | frames/s | vs Ultralytics predict |")
    print("|---|---|---|")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(f"| {name} | {statistics.median(values):.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
