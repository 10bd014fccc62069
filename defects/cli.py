"""Data and model tools on the command line: `python -m defects COMMAND --help`.

python -m defects import_voc NEU/images NEU/annotations data/neu_det --seed 0
python -m defects import_masks magnetic_tile_src data/magnetic_tile --classes magnetic_tile
python -m defects preview data/weld plots/weld/data_samples.png
python -m defects predict --model models/weld/bundle.pt --input data/weld/test/images
python -m defects predict --model models/steel/bundle.pt --input data/steel/test/images
python -m defects serve --model models/steel/bundle.pt --port 8000
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import fire
import numpy as np

from defects.formats.io import atomic_write_text

if TYPE_CHECKING:
    from defects.predict import DetectionPredictor, SegmentationPredictor


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


def import_masks(
    source: str,
    out_dir: str,
    classes: str,
    mask_suffix: str = ".png",
    seed: int = 0,
    strict: bool = True,
    split: str = "0.7,0.15,0.15",
    mask_threshold: int = 128,
) -> dict:
    """Import per-class folders of images + binary masks into the index-mask layout.

    `classes` is "name=folder,...,none=folder" (folders relative to `source`, "none" = the
    defect-free folder) or a preset name: magnetic_tile. Source files are only read; `out_dir`
    is written whole or not at all.
    """
    from defects.formats.mask_folder import import_mask_folder, parse_classes

    if isinstance(split, (tuple, list)):  # fire parses "0.7,0.15,0.15" into a tuple
        fractions = tuple(float(x) for x in split)
    else:
        fractions = tuple(float(x) for x in str(split).split(","))
    if len(fractions) != 3:
        raise ValueError(f"--split: expected three fractions 'train,valid,test', got '{split}'")
    return import_mask_folder(
        source,
        out_dir,
        parse_classes(classes),
        mask_suffix=str(mask_suffix),
        mask_threshold=int(mask_threshold),
        split_fractions=fractions,  # type: ignore[arg-type]
        seed=int(seed),
        strict=bool(strict),
    )


def preview(root: str, out_png: str, n: int = 8, split: str = "train") -> str:
    """Draw a few images of a YOLO-layout dataset with their boxes into one PNG."""
    from defects.data.synthetic import save_preview

    return str(save_preview(root, out_png, n, split))


PREDICT_BATCH = 4  # images per forward pass: a few share one call, memory stays small


def predict(
    model: str,
    input: str,
    output: str = "outputs/predictions",
    threshold: float | None = None,
    overlays: bool = True,
) -> str:
    """Run a model bundle on an image or a folder of images; return the main report's path.

    Detection bundles write detections.json and <stem>_overlay.png; `threshold` overrides the
    score threshold. Segmentation bundles write masks/<stem>.png (uint8 index mask: 0 =
    background, k = class k; where classes overlap the higher class id wins), overlays/<stem>.png,
    summary.json ({image: {gate, areas}}) and submission.csv (Severstal
    ImageId,ClassId,EncodedPixels; ImageId = the file name, a defect-free image gets one empty
    row); `threshold` overrides the gate threshold and submission.csv is returned.
    """
    from defects.data.images import list_images
    from defects.predict import SegmentationPredictor, load

    predictor = load(model)
    source = Path(input)
    images = list_images(source) if source.is_dir() else [source]
    if not images:
        raise FileNotFoundError(f"{source}: no images found")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(predictor, SegmentationPredictor):
        if threshold is not None:
            predictor.thresholds.gate = float(threshold)
        return str(_predict_segmentation(predictor, images, out_dir, overlays))
    if threshold is not None:
        predictor.score_threshold = float(threshold)
    return str(_predict_detection(predictor, images, out_dir, overlays))


def _predict_detection(
    predictor: DetectionPredictor, images: list[Path], out_dir: Path, overlays: bool
) -> Path:
    """detections.json ({image: [{label, score, box}]}) and one box figure per image."""
    from tqdm import tqdm

    from defects.data.images import read_image
    from defects.plots import draw_boxes, image_grid, save_figure
    from defects.serve import detection_records

    results = {}
    for path in tqdm(images, desc="predict", unit="img"):
        det = predictor.predict(path)
        results[path.name] = detection_records(det)
        if overlays:
            image = read_image(path, predictor.channels)
            fig, (ax,) = image_grid(1, image.shape[0] / image.shape[1], cell_width=8.0)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            draw_boxes(ax, det.boxes, det.class_ids.tolist(), predictor.class_names, det.scores)
            save_figure(fig, out_dir / f"{path.stem}_overlay.png")
    report = out_dir / "detections.json"
    atomic_write_text(report, json.dumps(results, indent=1))
    return report


def _predict_segmentation(
    predictor: SegmentationPredictor, images: list[Path], out_dir: Path, overlays: bool
) -> Path:
    """Index masks, overlays, summary.json and submission.csv, PREDICT_BATCH images at a time.

    Each image is decoded once and the array feeds both the model and the overlay.
    """
    from PIL import Image
    from tqdm import tqdm

    from defects.data.images import read_image
    from defects.formats.mask_folder import write_index_mask
    from defects.formats.severstal import rle_encode, write_severstal_csv
    from defects.plots import overlay_masks

    stems: dict[str, str] = {}
    for path in images:  # masks/<stem>.png would silently overwrite each other
        if stems.setdefault(path.stem, path.name) != path.name:
            raise ValueError(f"{stems[path.stem]} and {path.name} would both write {path.stem}.png")
    if overlays:
        (out_dir / "overlays").mkdir(exist_ok=True)
    submission: dict[str, dict[int, str]] = {}
    summary: dict[str, dict] = {}
    with tqdm(total=len(images), desc="predict", unit="img") as progress:
        for start in range(0, len(images), PREDICT_BATCH):
            paths = images[start : start + PREDICT_BATCH]
            arrays = [read_image(path, predictor.channels) for path in paths]
            results = predictor.predict_batch(arrays)
            for path, image, result in zip(paths, arrays, results, strict=True):
                write_index_mask(out_dir / "masks" / f"{path.stem}.png", _index_mask(result.masks))
                if overlays:
                    overlay = overlay_masks(image, result.masks)
                    Image.fromarray(overlay).save(out_dir / "overlays" / f"{path.stem}.png")
                submission[path.name] = {  # RLE text, not masks: memory stays flat
                    k + 1: rle_encode(mask) for k, mask in enumerate(result.masks) if mask.any()
                }
                summary[path.name] = {"gate": round(result.gate, 4), "areas": result.areas()}
            progress.update(len(paths))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    report = out_dir / "submission.csv"
    write_severstal_csv(report, submission)
    return report


def _index_mask(masks: np.ndarray) -> np.ndarray:
    """[K, H, W] bool -> (H, W) uint8, 0 = background; classes are painted in id order, so
    where masks overlap the higher class id wins."""
    if len(masks) > 255:
        raise ValueError(f"{len(masks)} classes do not fit a uint8 index mask")
    index = np.zeros(masks.shape[1:], dtype=np.uint8)
    for class_id, mask in enumerate(masks, start=1):
        index[mask] = class_id
    return index


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: int = 32) -> None:
    """Serve a bundle as an upload page (/), /predict, /api/predict and /health.

    Flask's own server: for a bench or a local demo, not for exposure to the internet.
    """
    from defects.predict import load
    from defects.serve import create_app

    create_app(load(model), max_upload_mb=int(max_upload_mb)).run(host=host, port=int(port))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    fire.Fire(
        {
            "import_voc": import_voc,
            "import_masks": import_masks,
            "preview": preview,
            "predict": predict,
            "serve": serve,
        }
    )


if __name__ == "__main__":
    main()
