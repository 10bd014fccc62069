"""Data and model tools on the command line: `python -m defects COMMAND --help`.

python -m defects import_voc NEU/images NEU/annotations data/neu_det --seed 0
python -m defects import_masks magnetic_tile_src data/magnetic_tile --classes magnetic_tile
python -m defects preview data/weld plots/weld/data_samples.png
python -m defects predict --model models/weld/bundle.pt --input data/weld/test/images
python -m defects predict --model models/steel/bundle.pt --input data/steel/test/images
python -m defects export --model models/steel/bundle.pt --format onnx
python -m defects predict --model models/steel/onnx --input data/steel/test/images
python -m defects serve --model models/steel/bundle.pt --port 8000 --backend onnx
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import fire


def as_list(value: Any) -> list[Any]:
    """A list flag as fire hands it over: "a,b" arrives as a tuple, "a" as a str."""
    if isinstance(value, (tuple, list)):
        return list(value)
    return [v for v in str(value).split(",") if v.strip()]


def split_fractions(split: Any, flag: str = "--split") -> tuple[float, float, float]:
    """Three train,valid,test fractions from a flag; a ValueError naming the flag otherwise."""
    try:
        fractions = tuple(float(x) for x in as_list(split))
    except ValueError:
        raise ValueError(
            f"{flag}: expected three numbers 'train,valid,test', got '{split}'"
        ) from None
    if len(fractions) != 3:
        raise ValueError(f"{flag}: expected three fractions 'train,valid,test', got '{split}'")
    return fractions  # type: ignore[return-value]


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

    fractions = split_fractions(split)
    names = [str(n).strip() for n in as_list(class_names)] if class_names else None
    return convert_voc_dataset(
        images_dir, annotations_dir, out_dir, names, fractions, int(seed), bool(strict)
    )


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

    fractions = split_fractions(split)
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


def predict(
    model: str,
    input: str,
    output: str = "outputs/predictions",
    threshold: float | None = None,
    overlays: bool = True,
    backend: str = "eager",
) -> str:
    """Run a bundle (or an ONNX export folder) on an image or a folder; return the report path.

    What is written is the model kind's: detection bundles write detections.json and
    overlays/<stem>.png; segmentation bundles write masks/<stem>.png (uint8 index mask: 0 =
    background, k = class k; where classes overlap the higher class id wins), overlays/,
    summary.json ({image: {gate, areas}}) and submission.csv (Severstal
    ImageId,ClassId,EncodedPixels), which is returned. `threshold` overrides the main
    threshold (detection: score; gated segmentation: gate). `backend`: eager or onnx.
    """
    from defects.data.images import list_images
    from defects.predict import load, predict_images

    predictor = load(model, backend=backend)
    if threshold is not None:
        predictor.set_threshold(float(threshold))
    source = Path(input)
    if not source.exists():
        raise FileNotFoundError(f"--input: {source} does not exist")
    images = list_images(source) if source.is_dir() else [source]
    if not images:
        raise FileNotFoundError(f"--input: {source}: no images found")
    return str(predict_images(predictor, images, Path(output), bool(overlays)))


def export(model: str, format: str = "onnx", output: str | None = None) -> str:
    """Export a bundle for ONNX Runtime: graph(s) + export.json (default outputs/onnx/<name>).

    `defects.load(folder)`, `predict --model folder` and `serve --model folder` use it.
    """
    from defects.export import export_bundle

    return str(export_bundle(model, output, format))


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: int = 32,
    backend: str = "eager",
) -> None:
    """Serve a bundle or export as an upload page (/), /predict, /api/predict and /health.

    Flask's own server: for a bench or a local demo, not for exposure to the internet.
    """
    from defects.predict import load
    from defects.serve import create_app

    app = create_app(load(model, backend=backend), max_upload_mb=int(max_upload_mb))
    app.run(host=host, port=int(port))


COMMANDS = {
    "import_voc": import_voc,
    "import_masks": import_masks,
    "preview": preview,
    "predict": predict,
    "export": export,
    "serve": serve,
}


def main(argv: list[str] | None = None) -> None:
    """fire's command line; a user error ends it with one line naming the argument or file."""
    from defects.config import ConfigError
    from defects.formats.errors import FormatError
    from defects.runtime import offline_environment

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    offline_environment()
    try:
        fire.Fire(COMMANDS, command=argv)
    except (ConfigError, FormatError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"defects: {exc}") from None


if __name__ == "__main__":
    main()
