"""Data and model tools on the command line: `python -m defects COMMAND --help`.

python -m defects import_voc NEU/images NEU/annotations data/neu_det --seed 0
python -m defects preview data/weld plots/weld/data_samples.png
python -m defects predict --model models/weld/bundle.pt --input data/weld/test/images
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import fire

from defects.formats.io import atomic_write_text


def import_voc(
    images_dir: str,
    annotations_dir: str,
    out_dir: str,
    split: str = "0.7,0.2,0.1",
    seed: int = 0,
    strict: bool = True,
    class_names: str | None = None,
) -> dict:
    """Import a Pascal VOC dataset into the YOLO layout with a seeded train/valid/test split.

    Source files are only read; `out_dir` is written whole or not at all.
    """
    from defects.formats.voc import convert_voc_dataset

    fractions = tuple(float(x) for x in str(split).split(","))
    if len(fractions) != 3:
        raise ValueError(f"--split: expected three fractions 'train,valid,test', got '{split}'")
    names = [n.strip() for n in class_names.split(",")] if class_names else None
    return convert_voc_dataset(images_dir, annotations_dir, out_dir, names, fractions, seed, strict)


def preview(root: str, out_png: str, n: int = 8, split: str = "train") -> str:
    """Draw a few images of a YOLO-layout dataset with their boxes into one PNG."""
    from defects.data.synthetic import save_preview

    return str(save_preview(root, out_png, n, split))


def predict(
    model: str,
    input: str,
    output: str = "outputs/predictions",
    threshold: float | None = None,
    overlays: bool = True,
) -> str:
    """Run a model bundle on an image or a folder; write detections.json and overlay PNGs."""
    from tqdm import tqdm

    from defects.data.images import list_images, read_image
    from defects.plots import draw_boxes, image_grid, save_figure
    from defects.predict import load

    predictor = load(model)
    if threshold is not None:
        predictor.score_threshold = float(threshold)
    source = Path(input)
    images = list_images(source) if source.is_dir() else [source]
    if not images:
        raise FileNotFoundError(f"{source}: no images found")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for path in tqdm(images, desc="predict", unit="img"):
        det = predictor.predict(path)
        results[path.name] = [
            {"label": label, "score": round(float(s), 4), "box": [round(float(v), 1) for v in box]}
            for label, s, box in zip(det.labels, det.scores, det.boxes, strict=True)
        ]
        if overlays:
            image = read_image(path, predictor.channels)
            fig, (ax,) = image_grid(1, image.shape[0] / image.shape[1], cell_width=8.0)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            draw_boxes(ax, det.boxes, det.class_ids.tolist(), predictor.class_names, det.scores)
            save_figure(fig, out_dir / f"{path.stem}_overlay.png")
    report = out_dir / "detections.json"
    atomic_write_text(report, json.dumps(results, indent=1))
    return str(report)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fire.Fire({"import_voc": import_voc, "preview": preview, "predict": predict})


if __name__ == "__main__":
    main()
