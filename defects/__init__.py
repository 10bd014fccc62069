"""defects: industrial visual defect inspection (weld, steel, winding, pipe).

import defects
predictor = defects.load("models/weld/bundle.pt")  # or "models:/weld@production"
detections = predictor.predict("radiograph.png")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def _setting(name: str, default: Any = None) -> Any:
    """`${setting:NAME,DEFAULT}`: the machine's setting (defects.settings), read when the
    config is resolved, so pydantic loads only for a config that asks."""
    from defects.settings import setting

    return setting(name, default)


def _launcher(name: str, default: int) -> int:
    """`${launcher:NAME,DEFAULT}`: the node or per-node process count an outside launcher
    (torchrun, srun) started (defects.launch), else DEFAULT."""
    from defects.launch import layout_value

    return layout_value(name, default)


def _register_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("setting"):
        OmegaConf.register_new_resolver("setting", _setting)
    if not OmegaConf.has_resolver("launcher"):
        OmegaConf.register_new_resolver("launcher", _launcher)


_register_resolver()


def load(path: Any, device: str | None = None, backend: str = "eager", threads: int = 0) -> Any:
    """The predictor of a model bundle (`backend="eager"` or `"onnx"`), of an export folder
    written by `python -m defects export`, or of a registered model (`models:/weld@production`,
    `models:/weld/3`: MLflow's registry in the machine's tracking store); imports torch only
    when called. `device`: the machine's setting (DEFECTS_DEVICE) when not given, else cpu."""
    from defects.predict import load as _load

    return _load(path, device, backend, threads)
