"""What follows from a run's ``Config``: the images of a batched sweep, each image's loss weights, the layers in
use, the stages of a coarse-to-fine run, and the config as flat text for records, HParams and reports."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple

from omegaconf import OmegaConf

from nst_lightning.config.schema import Config, StyleWeighting

SWEPT_PATHS = {"init": "init.kind", "init_scale": "init.scale"}  # batch_sweep keys that name a nested key


class Stage(NamedTuple):
    size: int  # long side, pixels
    steps: int
    content_scale: float  # alpha is multiplied by this: (reference size / size)^2 keeps the balance across sizes


class Image(NamedTuple):
    """One generated image of a run: ``name`` is "" for a plain run, else its swept values (``ratio=0.01,seed=1``),
    which also name its subfolder; ``overrides`` are those key=value pairs; ``config`` is its own settings."""

    name: str
    overrides: list[str]
    config: Config


def style_paths(config: Config) -> list[str]:
    """The style image(s): ``style=a.jpg`` or ``style=[a.jpg,b.jpg]``."""
    return [config.style] if isinstance(config.style, str) else [str(s) for s in config.style]


def blend(config: Config) -> list[float]:
    """The styles' blend weights, normalised to sum 1 (equal when ``style_blend`` is null)."""
    weights = [1.0] * len(style_paths(config)) if config.style_blend is None else [float(b) for b in config.style_blend]
    return [b / sum(weights) for b in weights]


def loss_weights(config: Config) -> tuple[float, float]:
    """(alpha, beta): beta = style_weight, alpha = content_weight if given, else ratio * beta."""
    beta = float(config.style_weight)
    alpha = float(config.content_weight) if config.content_weight is not None else float(config.ratio) * beta
    return alpha, beta


def style_weights(config: Config, channels: Callable[[str], int]) -> dict[str, float]:
    """w_l per style layer: the given list, else by ``style_weighting``: equal (1/L, the paper) or proportional to
    1/N_l^2 and summing to 1 (``channels``; N_l from the network). jcjohnson/neural-style's style loss, a mean over
    the N_l^2 entries of G/(N_l M_l), is (4 / N_l^2) E_l: its equal weights are these."""
    layers = list(config.style_layers)
    if config.style_weights is not None:
        weights = [float(w) for w in config.style_weights]
    elif config.style_weighting == StyleWeighting.channels:
        inverse = [1.0 / channels(name) ** 2 for name in layers]
        weights = [w / sum(inverse) for w in inverse]
    else:
        weights = [1.0 / len(layers)] * len(layers)
    return dict(zip(layers, weights, strict=True))


def layers_in_use(config: Config) -> list[str]:
    """The layers whose losses carry weight: a term weighted 0 is not computed, so the network can stop earlier
    (a content reconstruction at conv1_1 never runs conv2_1 ... conv5_1)."""
    alpha, beta = loss_weights(config)
    layers = ([config.content_layer] if alpha > 0 else []) + (list(config.style_layers) if beta > 0 else [])
    return list(dict.fromkeys(layers))


def stage_sizes(config: Any) -> list[tuple[int, int]]:
    """(long side, steps) of each coarse-to-fine stage; a plain run is one stage at ``size``."""
    if not config.scales:
        return [(int(config.size), int(config.steps))]
    steps = list(config.scale_steps) if config.scale_steps else [config.steps] * len(config.scales)
    return [(int(size), int(n)) for size, n in zip(config.scales, steps, strict=True)]


def stages(config: Config) -> list[Stage]:
    sizes = stage_sizes(config)
    # L_content sums over the M_l positions of its layer (~ size^2) while E_l is normalised by M_l^2: alpha is
    # scaled by (reference / size)^2, the reference being reference_size, or the output size when it is null
    # (then the paper's exact objective at the output, and coarse stages keep the output's balance).
    reference = config.reference_size or sizes[-1][0]
    return [Stage(size, steps, (reference / size) ** 2) for size, steps in sizes]


def swept(config: Config) -> dict[str, list[Any]]:
    """The keys a batched sweep varies, with their values (empty: a single image)."""
    sweep = dataclasses.asdict(config.batch_sweep)
    return {key: list(values) for key, values in sweep.items() if values is not None}


def _set(config: Config, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    target: Any = config
    for name in parents:
        target = getattr(target, name)
    setattr(target, leaf, value)


def images(config: Config) -> list[Image]:
    """One ``Image`` per image of a batched sweep (the lists' lengths are checked in validate.py); a plain run has
    one, named ""."""
    sweep = swept(config)
    if not sweep:
        return [Image("", [], config)]
    out = []
    for i in range(len(next(iter(sweep.values())))):
        one = copy.deepcopy(config)
        one.batch_sweep = type(config.batch_sweep)()
        pairs = [(key, values[i]) for key, values in sweep.items()]
        for key, value in pairs:
            _set(one, SWEPT_PATHS.get(key, key), value)
        overrides = [f"{key}={format_value(value)}" for key, value in pairs]
        out.append(Image(",".join(overrides), overrides, one))
    return out


def format_value(value: Any) -> str:
    """Values as a user would type them in an override: 1e-05, 0.001, null, [conv1_1,conv2_1]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = f"{value:g}"  # 1e-05 and 0.001 rather than 1.0e-05 or 0.0010000
        if short.lstrip("-").isdigit():
            short += ".0"  # a float stays recognisably a float: lr=1.0
        return short if float(short) == value else repr(value)
    if isinstance(value, list | tuple) or OmegaConf.is_list(value):  # lists may arrive as ListConfig
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value.value if isinstance(value, Enum) else value)


def record(config: Any) -> dict[str, Any]:
    """The settings as plain data (enums as their values): a run folder's .hydra/config.yaml, HParams."""
    node = config if OmegaConf.is_config(config) else OmegaConf.structured(config)
    keep = OmegaConf.masked_copy(node, [key for key in node if key != "hydra"])
    return OmegaConf.to_container(keep, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {dotted key: scalar}; trainer.* is where the run ran, not what it computed."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if name == "hydra" or (name.startswith("trainer.") and name != "trainer.precision"):
            continue
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = format_value(value) if isinstance(value, list) else value
    return flat
