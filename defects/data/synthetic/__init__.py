"""Synthetic, fully offline default datasets (generated, never downloaded)."""

from defects.data.synthetic.preview import save_preview
from defects.data.synthetic.weld import WELD_CLASSES, generate_weld_dataset, render_weld_radiograph

__all__ = ["WELD_CLASSES", "generate_weld_dataset", "render_weld_radiograph", "save_preview"]
