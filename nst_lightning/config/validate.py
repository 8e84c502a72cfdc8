"""What Hydra's types cannot check: sensible numbers, list lengths, seeds, layer names. Each failure is one
actionable line (NSTError), raised before any heavy work: the numbers before the network is built, the layer
names (which depend on the network) right after."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from nst_lightning.config.derive import Image, images, layers_in_use, loss_weights, stage_sizes, style_paths, swept
from nst_lightning.config.schema import SETTINGS_VERSION, Config, InitKind, PreserveColor
from nst_lightning.util.errors import NSTError

SEED_MAX = 2**32 - 1  # numpy's range, which Lightning's seed_everything enforces


def positive_finite(name: str, value: float | None, allow_zero: bool = True) -> None:
    if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise NSTError(f"{name}={value} is not valid: it must be {need}")


def positive_counts(config: Any, *names: str) -> None:
    """Each of ``names`` (size, steps, ...) must be a positive whole number: one line naming the key if not."""
    for name in names:
        value = getattr(config, name)
        if value is None or value <= 0:
            raise NSTError(f"{name}={value} is not valid: it must be a positive whole number")


def check_seed(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= SEED_MAX:
        raise NSTError(f"{name}={value} is not valid: a seed is a whole number from 0 to {SEED_MAX}")


def _check_weights(name: str, values: Sequence[float], other: tuple[str, int, str, str], all_zero: str) -> None:
    """A list of weights: one per item of ``other`` (key, count, unit, item), each finite >= 0, not all zero."""
    key, count, unit, item = other
    if len(values) != count:
        raise NSTError(
            f"{name} has {len(values)} values but {key} has {count}{' ' + unit if unit else ''}: "
            f"give one weight per {item} (or leave {name} unset for equal weights)"
        )
    for value in values:
        positive_finite("a style weight" if name == "style_weights" else f"a {name} weight", value)
    if sum(values) == 0:
        raise NSTError(all_zero)


def _check_styles(config: Config) -> None:
    styles = style_paths(config)
    if not styles:
        raise NSTError("style=[] names no image: give at least one style image")
    if config.style_blend is not None:
        _check_weights(
            "style_blend",
            config.style_blend,
            ("style", len(styles), "images", "style image"),
            "style_blend is all zero: give at least one style a positive weight",
        )
    positive_finite("style_scale", config.style_scale, allow_zero=False)
    if config.style_size is not None and config.style_scale != 1.0:
        raise NSTError("style_size and style_scale both set: use one (style_size in pixels, or style_scale relative)")
    if config.style_size is not None and config.style_size <= 0:
        raise NSTError(f"style_size={config.style_size} is not valid: a positive number of pixels, or null")


def _check_extras(config: Config) -> None:
    positive_finite("color_weight", config.color_weight)
    if config.color_weight > 0 and config.preserve_color == PreserveColor.luminance:
        raise NSTError("color_weight has no use with preserve_color=luminance (the colours are the content's)")
    positive_finite("temporal_weight", config.temporal_weight)
    if config.temporal_weight > 0 and not config.temporal_target:
        raise NSTError("temporal_weight > 0 needs temporal_target=/path/to/previous_frame.png")


def _check_scales(config: Config) -> None:
    if config.scales is None:
        if config.scale_steps is not None:
            raise NSTError("scale_steps needs scales: e.g. scales=[256,512] scale_steps=[300,100]")
        return
    scales = list(config.scales)
    if not scales or any(s is None or s <= 0 for s in scales):
        raise NSTError(f"scales={scales} is not valid: give increasing long sides, e.g. scales=[256,512]")
    if any(a >= b for a, b in itertools.pairwise(scales)):  # the same size twice: a stage redone
        raise NSTError(
            f"scales={scales} must be increasing (coarse to fine, each larger than the one before), "
            "e.g. scales=[256,512]"
        )
    if config.scale_steps is not None:
        if len(config.scale_steps) != len(scales):
            raise NSTError(
                f"scale_steps has {len(config.scale_steps)} values but scales has {len(scales)}: one per stage"
            )
        if any(n is None or n <= 0 for n in config.scale_steps):
            raise NSTError(f"scale_steps={list(config.scale_steps)} is not valid: positive step counts")


def _check_engine(config: Config) -> None:
    if config.snapshot_every < 0:
        raise NSTError(f"snapshot_every={config.snapshot_every} is not valid: 0 (off) or a positive step count")
    engine = config.engine
    if engine.checkpoint_every < 0:
        raise NSTError(f"engine.checkpoint_every={engine.checkpoint_every} is not valid: 0 (off) or a step count")
    positive_finite("engine.checkpoint_minutes", engine.checkpoint_minutes)
    if engine.log_every <= 0:
        raise NSTError(f"engine.log_every={engine.log_every} is not valid: a positive step count")
    tile = engine.tile
    if tile is not None and tile != "auto" and not (isinstance(tile, int) and not isinstance(tile, bool) and tile > 0):
        raise NSTError(f"engine.tile={tile} is not valid: a tile side in pixels (e.g. 512), auto, or null (untiled)")


def _check_optimizer(node: Any) -> None:
    """The built-in optimisers' options that their constructors accept but a run cannot use (a zero step)."""
    for key in ("lr", "first_step", "max_step"):
        if option(node, key) is not None:
            positive_finite(f"optimizer.{key}", option(node, key), allow_zero=False)
    size = option(node, "history_size")
    if size is not None and size <= 0:
        raise NSTError(f"optimizer.history_size={size} must be a positive whole number")


def _check_weights_and_sizes(config: Config) -> None:
    for key in ("ratio", "style_weight", "tv_weight"):
        positive_finite(key, getattr(config, key))
    if config.content_weight is not None:
        positive_finite("content_weight", config.content_weight)
    alpha, beta = loss_weights(config)
    if alpha == 0 and beta == 0 and config.tv_weight == 0 and config.color_weight == 0:
        raise NSTError("every loss weight is zero (content, style, tv and colour): nothing to optimise")
    positive_counts(config, "size", "steps")
    if config.reference_size is not None and config.reference_size <= 0:
        raise NSTError(f"reference_size={config.reference_size} is not valid: a positive long side in pixels, or null")
    if config.init.kind == InitKind.image and not config.init.path:
        raise NSTError("init=image needs a path: add init.path=/path/to/start.jpg")
    positive_finite("init.scale", config.init.scale)


def _check_layer_lists(config: Config) -> None:
    if len(config.style_layers) == 0:
        raise NSTError("style_layers is empty: name at least one layer, e.g. style_layers=[conv1_1,conv2_1]")
    if len(set(config.style_layers)) != len(config.style_layers):
        raise NSTError(f"style_layers lists a layer twice: {list(config.style_layers)}")
    if config.style_weights is not None:
        _check_weights(
            "style_weights",
            config.style_weights,
            ("style_layers", len(config.style_layers), "", "style layer"),
            "style_weights are all zero: set style_weight=0 instead to switch the style loss off",
        )


def check_batch(config: Config) -> None:
    lengths = {key: len(values) for key, values in swept(config).items()}
    if lengths and (any(n == 0 for n in lengths.values()) or len(set(lengths.values())) != 1):
        raise NSTError(
            f"batch_sweep needs lists of the same, non-zero length (got {lengths}): "
            "e.g. batch_sweep.ratio=[1e-2,1e-3] batch_sweep.seed=[0,1] makes 2 images"
        )


def validate(config: Config) -> None:
    """Every check of one image's config that needs no image or network, each failing with one actionable line."""
    if config.settings_version != SETTINGS_VERSION:
        raise NSTError(
            f"settings_version={config.settings_version}: this nst-lightning writes and reads version "
            f"{SETTINGS_VERSION} (older records are migrated on resume=); leave settings_version unset"
        )
    _check_styles(config)
    _check_extras(config)
    _check_scales(config)
    _check_layer_lists(config)
    _check_weights_and_sizes(config)
    check_seed("seed", config.seed)
    _check_engine(config)
    _check_optimizer(config.optimizer)


def option(node: Any, key: str) -> Any:
    """A plug-in node's option (a structured config or a plain dict), None where it has none."""
    return node.get(key) if isinstance(node, dict) else getattr(node, key, None)


def validate_run(config: Config) -> list[Image]:
    """Every check that needs no image or network, for the run and each image of a batched sweep; the images."""
    check_batch(config)
    check_seed("network.seed", option(config.network, "seed"))
    for seed in config.batch_sweep.seed or []:
        check_seed("batch_sweep.seed", seed)
    found = images(config)
    for image in found:
        validate(image.config)
    return found


def check_layers(images: Sequence[Image], network: Any) -> int:
    """The layer names of every image against the ``network`` (a FeatureNetwork), and the sizes against its deepest
    layer in use; returns the smallest image side the run can take."""
    minimum = 1
    for image in images:
        config = image.config
        network.check_layers([config.content_layer], "content")
        network.check_layers(config.style_layers, "style")
        layers = layers_in_use(config)
        need = network.stride(network.deepest(layers)) if layers else 1
        smallest = stage_sizes(config)[0][0]
        if smallest < need:
            name = "size" if not config.scales else "scales[0]"
            raise NSTError(f"{name}={smallest} is too small for the deepest layer in use: use {name} >= {need}")
        minimum = max(minimum, need)
    return minimum
