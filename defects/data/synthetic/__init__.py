"""Synthetic, fully offline default datasets (generated, never downloaded)."""

from defects.data.synthetic.preview import save_preview
from defects.data.synthetic.steel import (
    STEEL_CLASSES,
    generate_steel_dataset,
    render_steel_strip,
    save_steel_preview,
)
from defects.data.synthetic.weld import WELD_CLASSES, generate_weld_dataset, render_weld_radiograph

__all__ = [
    "STEEL_CLASSES",
    "WELD_CLASSES",
    "generate_steel_dataset",
    "generate_weld_dataset",
    "render_steel_strip",
    "render_weld_radiograph",
    "save_preview",
    "save_steel_preview",
]
