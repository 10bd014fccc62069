"""Model kinds: one folder each (net, module, predictor, evaluate, export), one registry.

    from defects.kinds import get_kind
    kind = get_kind(bundle["model"]["kind"])      # or a LightningModule's `kind` attribute
    predictor = kind.predictor(bundle)

Built-in kinds are imported on first lookup, so `import defects` stays light. A new kind
subclasses `defects.kinds.base.ModelKind` and calls `register(MyKind())`; its LightningModule
sets `kind = "<name>"`.
"""

from __future__ import annotations

import importlib

from defects.kinds.base import ModelKind

_KINDS: dict[str, ModelKind] = {}
BUILTIN = {
    "fasterrcnn": "defects.kinds.fasterrcnn",
    "gated_segmentation": "defects.kinds.gated",
    "yolo": "defects.kinds.yolo",
}
# Names bundles written before the kinds had folders still carry.
ALIASES = {"detector": "fasterrcnn", "segmenter": "gated_segmentation"}


def register(kind: ModelKind) -> ModelKind:
    """Make `kind` findable by its name (a second registration of a name replaces the first)."""
    if not kind.name:
        raise ValueError(f"{type(kind).__name__}: a model kind needs a name")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> ModelKind:
    """The registered kind called `name` (built-ins load on demand)."""
    name = ALIASES.get(name, name)
    if name not in _KINDS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _KINDS:
        known = sorted(set(_KINDS) | set(BUILTIN))
        raise ValueError(f"unknown model kind '{name}'; known: {', '.join(known)}")
    return _KINDS[name]


def kind_of(module: object) -> ModelKind:
    """The kind of a LightningModule, from its `kind` class attribute."""
    name = getattr(module, "kind", None)
    if not isinstance(name, str):
        raise ValueError(f"{type(module).__name__} has no `kind` attribute naming its model kind")
    return get_kind(name)


__all__ = ["ModelKind", "get_kind", "kind_of", "register"]
