"""Optional pretrained weights: a torchvision hub name or a local file, never a default.

Factories are often air-gapped, so a local file is as first-class as a hub name, and nothing
is fetched unless the user named it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeGuard

import torch
from torch import nn

log = logging.getLogger("defects")


def is_local_file(weights: str | None) -> TypeGuard[str]:
    """A weights value naming a file on disk (as opposed to a hub enum name)."""
    if not weights:
        return False
    return Path(weights).suffix in {".pt", ".pth", ".ckpt", ".bin"} or Path(weights).exists()


def load_local_weights(module: nn.Module, path: str, prefix: str = "") -> None:
    """Load matching tensors from `path` into `module`; report what did not fit.

    Keys whose shape differs (e.g. a head trained for another class count) are left at their
    fresh initialisation, so a COCO checkpoint can seed a 4-class detector.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: weights file not found")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{file}: no tensor matches the model (wrong file or prefix '{prefix}')")
    module.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    log.info(
        "%s: loaded %d tensors, %d left at init (%s...)",
        file,
        len(usable),
        len(skipped),
        skipped[:3],
    )
