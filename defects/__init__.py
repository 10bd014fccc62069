"""defects: industrial visual defect inspection (weld, steel, winding, pipe).

import defects
predictor = defects.load("models/weld/bundle.pt")
detections = predictor.predict("radiograph.png")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(path: Any, device: str = "cpu", backend: str = "eager", threads: int = 0) -> Any:
    """The predictor of a model bundle (`backend="eager"` or `"onnx"`) or of an export folder
    written by `python -m defects export`; imports torch only when called."""
    from defects.predict import load as _load

    return _load(path, device, backend, threads)
