"""Pre-labelling: a trained detection bundle draws first boxes for people to correct in CVAT.

Correcting boxes is much faster than drawing them, so new frames go through the current model
first; the output is YOLO labels (for training once reviewed) and a "CVAT for images 1.1"
annotations.xml to upload into the CVAT task made from the same frames.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from defects.formats.cvat import write_cvat_images_xml
from defects.formats.io import staged_directory
from defects.formats.yolo import YoloBox, write_class_names, write_yolo_labels
from defects.progress import progress
from defects.results import Result

__all__ = ["prelabel"]

log = logging.getLogger("defects")


def _yolo_boxes(result: Result, width: int, height: int, name: str) -> list[YoloBox]:
    """A result's findings as normalised boxes; boxes with no area inside the image are
    dropped (with a warning), since no label file can hold them."""
    found = result.as_boxes()
    boxes = []
    for box, class_id in zip(found.boxes, found.class_ids, strict=True):
        try:
            boxes.append(YoloBox.from_xyxy(int(class_id), *map(float, box), width, height))
        except ValueError as exc:
            log.warning("%s: detection dropped: %s", name, exc)
    return boxes


def prelabel(
    model: str | os.PathLike[str],
    frames_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    confidence: float = 0.25,
    backend: str = "eager",
) -> dict:
    """Predict every image of `frames_dir`; write out_dir/labels/<stem>.txt, data.yaml and
    annotations.xml (image names as in `frames_dir`, i.e. as CVAT will know them).

    Any bundle pre-labels: a detector's boxes, or a segmenter's masks as one box per region.
    `confidence` is the model's main threshold (a box's score, a segmenter's gate). The
    frames are only read; the outputs appear together once all images are done
    (`staged_directory`). Returns counts and the written paths.
    """
    import defects
    from defects.data.images import list_images

    source = Path(frames_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: frames folder not found")
    images = list_images(source)
    if not images:
        raise FileNotFoundError(f"{source}: no images found")
    predictor = defects.load(model, backend=backend)
    predictor.set_threshold(float(confidence))
    items: list[tuple[str, int, int, list[YoloBox]]] = []
    results = progress(predictor.predict_many(images), "prelabel", len(images))
    for path, (array, result) in zip(images, results, strict=True):
        height, width = array.shape[:2]
        items.append((path.name, width, height, _yolo_boxes(result, width, height, path.name)))
    names = list(predictor.class_names)
    with staged_directory(out_dir) as tmp:
        for name, _, _, boxes in items:
            write_yolo_labels(tmp / "labels" / f"{Path(name).stem}.txt", boxes)
        write_class_names(tmp / "data.yaml", names)
        write_cvat_images_xml(tmp / "annotations.xml", items, names)
    out = Path(out_dir)
    return {
        "images": len(items),
        "boxes": sum(len(b) for *_, b in items),
        "labels_dir": str(out / "labels"),
        "data_yaml": str(out / "data.yaml"),
        "annotations": str(out / "annotations.xml"),
    }
