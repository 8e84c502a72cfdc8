"""The pluggable parts of a run, built once from their ``_target_`` nodes (``hydra.utils.instantiate``).

``build_parts(config)`` is called once per run (a video's frames and a coarse-to-fine run's stages share them): the
network is built (its weights decoded or drawn), the style statistic, optimiser, logger and extra terms become
factories (``_partial_``) that the engine calls with what only the run knows (the style's features, the image, each
image's log folder), and the callbacks are built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from torch import Tensor, nn

from nst_lightning.config.schema import Config
from nst_lightning.model.network import FeatureNetwork
from nst_lightning.model.statistics import StyleStatistic
from nst_lightning.util.errors import NSTError, first_line


@dataclass
class Parts:
    network: FeatureNetwork
    statistic: Callable[[Tensor], StyleStatistic]  # style features (1, N, h, w) -> the statistic with its targets
    optimizer: Callable[[list[Tensor]], torch.optim.Optimizer]
    logger: Callable[..., Logger]  # (save_dir=, name=, version=) -> one image's logger
    callbacks: list[L.Callback] = field(default_factory=list)
    extra_terms: dict[str, Callable[..., nn.Module]] = field(default_factory=dict)  # (content=, styles=) -> term

    @property
    def statistic_class(self) -> type:
        return getattr(self.statistic, "func", type(self.statistic))


def build(key: str, node: Any) -> Any:
    """``instantiate(node)``; a failure is one line naming the key (a constructor's own NSTError as it is)."""
    try:
        return instantiate(node)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, NSTError):
            raise cause from None
        target = node.get("_target_") if isinstance(node, dict) else getattr(node, "_target_", "?")
        detail = first_line(cause) if cause is not None else str(exc).strip().splitlines()[-1]
        raise NSTError(f"{key}: cannot build {target} ({detail})") from None


def build_parts(config: Config) -> Parts:
    network = build("network", config.network)
    if not isinstance(network, FeatureNetwork):
        raise NSTError(
            f"network: {type(network).__name__} is not a FeatureNetwork (nst_lightning.model.network): "
            "a network's layers are named, with channels, strides and reach"
        )
    return Parts(
        network=network,
        statistic=build("style_loss", config.style_loss),
        optimizer=build("optimizer", config.optimizer),
        logger=build("logger", config.logger),
        callbacks=[build(f"callbacks.{name}", node) for name, node in config.callbacks.items()],
        extra_terms={name: build(f"extra_terms.{name}", node) for name, node in config.extra_terms.items()},
    )
