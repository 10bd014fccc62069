"""Model kinds: one folder each, the same parts in every folder, found without a table.

    kinds/<name>/
        kind.py       KIND = <Name>Kind(): bundle <-> network <-> predictor <-> export
        net.py        the nn.Module
        module.py     the LightningModule that trains it
        predictor.py  the inference path (eager and ONNX Runtime) behind `Predictor`
        export.py     the ONNX graph(s)
        ...           what is truly the kind's own (yolo: adapter.py; gated: flow.py, ...)

The folder's name is the kind's name, written nowhere else: the registry lists the folders
of this package that hold a `kind.py`, a bundle stores the name, and a LightningModule's
kind is the `kind.py` beside its `module.py`. Kinds are imported on first lookup, so
`import defects` stays light.

    from defects.kinds import get_kind, kind_of
    kind = get_kind(bundle["model"]["kind"])   # or kind_of(lightning_module)
    predictor = kind.predictor(bundle)

A kind that lives in another package has the same layout and is found the same way from
its LightningModule; to load its bundles by name in a new process, name its package in the
`defects.kinds` entry-point group (`toy = "my_package.toy"`) or call `register(KIND)`.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from functools import cache
from importlib.metadata import entry_points

from defects.kinds.base import KIND_PARTS, ModelKind

ENTRY_POINT_GROUP = "defects.kinds"
_KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Make `kind` findable by its name and aliases (a second registration replaces the first)."""
    _KINDS[kind.name] = kind
    return kind


@cache
def builtin_kinds() -> dict[str, str]:
    """{name: package} of the folders of `defects.kinds` that hold a `kind.py`."""
    found = {}
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        if info.ispkg and importlib.util.find_spec(f"{info.name}.kind") is not None:
            found[info.name.rpartition(".")[2]] = info.name
    return found


def plugin_kinds() -> dict[str, str]:
    """{name: package} named in the `defects.kinds` entry-point group of installed packages."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def kind_in_package(package: str) -> ModelKind:
    """The `KIND` of `<package>.kind`, registered; an error says what the folder lacks."""
    try:
        module = importlib.import_module(f"{package}.kind")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.kind":
            raise
        raise ValueError(
            f"{package} is not a model kind: it has no kind.py (a kind folder holds "
            f"{', '.join(p + '.py' for p in KIND_PARTS)})"
        ) from None
    kind = getattr(module, "KIND", None)
    if not isinstance(kind, ModelKind):
        raise ValueError(f"{package}.kind defines no KIND (a ModelKind instance)")
    return register(kind)


def _lookup(name: str) -> ModelKind | None:
    if name in _KINDS:
        return _KINDS[name]
    for kind in _KINDS.values():
        if name in kind.aliases:
            return kind
    return None


def get_kind(name: str) -> ModelKind:
    """The kind called `name` (or carrying it as an alias, for bundles of older versions)."""
    found = _lookup(name)
    if found is not None:
        return found
    packages = {**plugin_kinds(), **builtin_kinds()}
    if name in packages:
        return kind_in_package(packages[name])
    for package in packages.values():  # an alias: only the kinds themselves know theirs
        kind_in_package(package)
    found = _lookup(name)
    if found is None:
        known = sorted(set(_KINDS) | set(packages))
        raise ValueError(f"unknown model kind '{name}'; known: {', '.join(known)}")
    return found


def kind_of(module: object) -> ModelKind:
    """The kind of a LightningModule (or its class): the `kind.py` beside its `module.py`."""
    cls = module if isinstance(module, type) else type(module)
    package, _, part = cls.__module__.rpartition(".")
    if part != "module" or not package:
        raise ValueError(
            f"{cls.__qualname__} is defined in {cls.__module__}: a model kind's "
            "LightningModule lives in <kind folder>/module.py beside its kind.py"
        )
    return kind_in_package(package)


__all__ = [
    "ModelKind",
    "builtin_kinds",
    "get_kind",
    "kind_in_package",
    "kind_of",
    "register",
]
