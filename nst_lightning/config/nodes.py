"""Structured configs for the pluggable parts, made from the constructors they configure.

``node(VGG, source="random")`` is a dataclass with ``_target_`` (the constructor's import path), ``_partial_`` where
the object needs run-time arguments (a statistic takes the style's features, an optimiser the image), and one typed
field per keyword parameter the constructor has a default for, defaulting to that default unless the preset sets it.
So a default is stated once, in the signature of what it configures; Hydra checks the types of overrides and
refuses unknown keys; ``hydra.utils.instantiate`` builds the object at the edge.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf


def _holds(annotation: Any, default: Any) -> bool:
    probe = dataclasses.make_dataclass("Probe", [("x", annotation, _field(default))])
    try:
        OmegaConf.structured(probe)
    except Exception:  # an annotation OmegaConf cannot hold (a Tensor, a Union of several types, ...)
        return False
    return True


def _typed(annotation: Any, default: Any) -> Any:
    """``annotation`` if OmegaConf can hold it (with this default); else the first member of a union that it can
    (``float | Tensor``: float); else Any."""
    if _holds(annotation, default):
        return annotation
    members = [m for m in typing.get_args(annotation) if m is not type(None)]
    return next((m for m in members if _holds(m, default)), Any)


def _field(default: Any) -> Any:
    if isinstance(default, list | dict | tuple):
        value = list(default) if isinstance(default, tuple) else default
        return dataclasses.field(default_factory=lambda: type(value)(value))
    return dataclasses.field(default=default)


def options(target: Callable[..., Any], exclude: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """{name: (annotation, default)} of ``target``'s parameters with defaults (``exclude``: given at run time)."""
    hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    out = {}
    for name, parameter in inspect.signature(target).parameters.items():
        if parameter.default is inspect.Parameter.empty or name in exclude:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        out[name] = (hints.get(name, Any), parameter.default)
    return out


def node(target: Callable[..., Any], partial: bool = False, exclude: tuple[str, ...] = (), **values: Any) -> type:
    """The structured config of ``target`` (see the module docstring); ``values`` are this preset's own settings."""
    found = options(target, exclude)
    unknown = set(values) - set(found)
    if unknown:
        raise TypeError(f"{target.__qualname__} has no keyword option {', '.join(sorted(unknown))}")
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, dataclasses.field(default=f"{target.__module__}.{target.__qualname__}")),
        ("_convert_", str, dataclasses.field(default="all")),
    ]
    if partial:
        fields.append(("_partial_", bool, dataclasses.field(default=True)))
    for name, (annotation, default) in found.items():
        value = values.get(name, default)
        fields.append((name, _typed(annotation, value), _field(value)))
    schema = dataclasses.make_dataclass(f"{target.__name__}Config", fields)
    schema.preset = dict(values)  # what this option sets itself (tests: no default is stated twice)
    return schema
