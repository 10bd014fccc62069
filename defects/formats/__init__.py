"""Annotation formats (YOLO, Pascal VOC, Severstal RLE CSV): strict readers, atomic writers.

Pure Python (numpy/Pillow/PyYAML, no torch) so data tooling stays light and testable.
"""

from defects.formats.errors import FormatError, SkipReport, handle, note_clipped
from defects.formats.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_with,
)
from defects.formats.layout import IMAGE_SUFFIXES, SPLITS
from defects.formats.severstal import (
    SeverstalRecord,
    read_severstal_csv,
    rle_decode,
    rle_encode,
    write_severstal_csv,
)
from defects.formats.voc import VocAnnotation, VocObject, convert_voc_dataset, read_voc
from defects.formats.yolo import (
    CLIP_TOLERANCE,
    YoloBox,
    parse_yolo_line,
    read_class_names,
    read_yolo_labels,
    write_class_names,
    write_yolo_labels,
)

__all__ = [
    "FormatError",
    "SkipReport",
    "handle",
    "note_clipped",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_with",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "SeverstalRecord",
    "read_severstal_csv",
    "rle_decode",
    "rle_encode",
    "write_severstal_csv",
    "VocAnnotation",
    "VocObject",
    "convert_voc_dataset",
    "read_voc",
    "CLIP_TOLERANCE",
    "YoloBox",
    "parse_yolo_line",
    "read_class_names",
    "read_yolo_labels",
    "write_class_names",
    "write_yolo_labels",
]
