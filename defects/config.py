"""Config checks that run before any data is read, so a typo fails in a second, not an hour.

Hydra already rejects unknown override keys and unknown group options. This adds what it
cannot know: that every key of an instantiable node is a parameter of its `_target_`, and
that each value has the type the parameter declares.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config key whose name or value does not fit the object it configures."""


def _matches(value: Any, annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    if isinstance(value, Mapping) and "_target_" in value:
        return True  # an object built from config: its own node is checked on its own
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    base = origin or annotation
    if base in (list, tuple, Sequence) or base is typing.Sequence:
        return isinstance(value, (list, tuple))
    if base in (dict, Mapping) or base is typing.Mapping:
        return isinstance(value, Mapping)
    if inspect.isclass(base):
        try:
            return isinstance(value, base)  # e.g. torch.Tensor: no plain config value is one
        except TypeError:
            pass
    return True  # a type we cannot judge from plain config values: let the object decide


def _type_hints(target: Any, key: str) -> dict[str, Any]:
    """The target's resolved annotations; a signature we cannot read is an error, not a
    silently skipped check."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(function)
    except Exception as exc:  # e.g. an unresolvable forward reference
        name = getattr(target, "__qualname__", target)
        raise ConfigError(f"{key}._target_: cannot read the type hints of {name} ({exc})") from exc


def check_node(node: Mapping[str, Any], key: str) -> None:
    """Check one `_target_` node (resolved to plain values) against its target's signature."""
    target_name = node["_target_"]
    try:
        target = get_object(target_name)
    except Exception as exc:
        raise ConfigError(f"{key}._target_: cannot import '{target_name}' ({exc})") from exc
    signature = inspect.signature(target)
    parameters = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    hints = _type_hints(target, key)
    for name, value in node.items():
        if name.startswith("_"):
            continue
        if name not in parameters:
            if accepts_any:
                continue
            raise ConfigError(
                f"{key}.{name}: not a parameter of {target_name}; "
                f"valid keys: {', '.join(p for p in parameters if p != 'self')}"
            )
        annotation = hints.get(name, parameters[name].annotation)
        if isinstance(annotation, str) or value is None and parameters[name].default is None:
            continue
        if not _matches(value, annotation):
            if typing.get_origin(annotation) is Literal:
                expected = "one of " + ", ".join(map(str, typing.get_args(annotation)))
            else:
                expected = getattr(annotation, "__name__", annotation)
            raise ConfigError(
                f"{key}.{name}: got {value!r} ({type(value).__name__}), expected {expected}"
            )


def validate_config(
    cfg: DictConfig,
    keys: Sequence[str] = ("data", "model", "trainer", "logger", "prepare", "callbacks", "tune"),
) -> None:
    """Resolve every interpolation and check each instantiable node; raise ConfigError."""
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as exc:
        raise ConfigError(f"config cannot be resolved: {exc}") from exc

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping):
            if "_target_" in node:
                check_node(node, key)
            for name, child in node.items():
                walk(child, f"{key}.{name}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, f"{key}[{i}]")

    for key in keys:
        if container.get(key):
            walk(container[key], key)
