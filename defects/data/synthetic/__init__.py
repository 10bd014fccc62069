"""Synthetic, fully offline default datasets (generated, never downloaded).

Each task's generator is imported only when asked for, so one task's pipeline stage never
reads (or depends on) another task's generator.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "save_preview": "defects.data.synthetic.preview",
    "PIPE_CLASSES": "defects.data.synthetic.pipe",
    "PIPE_RARE_CLASSES": "defects.data.synthetic.pipe",
    "boxes_from_index_mask": "defects.pipe.coarse",
    "generate_pipe_dataset": "defects.data.synthetic.pipe",
    "render_pipe_frame": "defects.data.synthetic.pipe",
    "save_pipe_preview": "defects.data.synthetic.pipe",
    "STEEL_CLASSES": "defects.data.synthetic.steel",
    "generate_steel_dataset": "defects.data.synthetic.steel",
    "render_steel_strip": "defects.data.synthetic.steel",
    "save_steel_preview": "defects.data.synthetic.steel",
    "WELD_CLASSES": "defects.data.synthetic.weld",
    "generate_weld_dataset": "defects.data.synthetic.weld",
    "render_weld_radiograph": "defects.data.synthetic.weld",
    "WINDING_CLASSES": "defects.data.synthetic.winding",
    "generate_winding_dataset": "defects.data.synthetic.winding",
    "render_winding_video": "defects.data.synthetic.winding",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
