"""The package as the benchmarks use it: every import of ``nst_lightning`` in benchmarks/ is in this module.

The benchmarks hold a plan (``Plan``) and an objective (``Objective``) only to hand them back to the functions here,
so that a change to how the package turns a configuration into objects is met in this one file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

import nst_lightning.engine.run as nst_run
from nst_lightning.apps.presets import register_configs
from nst_lightning.config.derive import stages
from nst_lightning.config.schema import Config, conf_dir
from nst_lightning.config.validate import check_layers, validate_run
from nst_lightning.engine.memory import cpu_flags, estimate_peak_bytes, native_bf16_cpu
from nst_lightning.engine.parts import build_parts
from nst_lightning.inputs.images import load_image, save_png, white_noise
from nst_lightning.model.losses import content_loss, gram_over_m, style_layer_loss
from nst_lightning.model.objective import Objective
from nst_lightning.model.vgg import VGG, layer_table
from nst_lightning.optim.lbfgs import LBFGS

__all__ = [
    "LBFGS",
    "Objective",
    "Plan",
    "build_vgg19",
    "compose_config",
    "configure_device",
    "content_loss",
    "content_shape",
    "cpu_flags",
    "estimate_peak_bytes",
    "gram_over_m",
    "layer_channels",
    "layer_downsampling",
    "load_image",
    "module_image",
    "native_bf16_cpu",
    "objective_network",
    "objective_of",
    "our_lbfgs",
    "plan_of",
    "register_configs",
    "run",
    "save_png",
    "style_layer_loss",
    "total_loss",
    "white_noise",
]

Plan = Config  # what the package makes of a configuration before it builds anything: its typed plan
VGG19 = {name: (channels, stride) for name, channels, stride in layer_table("vgg19")}


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The configuration that ``python -m nst_lightning *overrides`` composes."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def plan_of(cfg: DictConfig) -> Plan:
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def run(cfg: DictConfig, folder: Path, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """One run of the product into ``folder``, ``callbacks`` added to every stage's Trainer: its metrics."""
    return nst_run.run(plan_of(cfg), folder, callbacks=callbacks)


def configure_device(plan: Plan) -> None:
    """The device settings (CUDA flags) that a run of ``plan`` makes before its first step."""
    nst_run.configure_device(plan)


def objective_of(
    plan: Plan, device: str | torch.device = "cpu", precision: str | None = None
) -> tuple[Objective, Tensor]:
    """(objective, start images (K, 3, H, W)) of the last stage of ``plan`` on ``device``, built as the run builds
    them. ``precision`` replaces the plan's (``"32-true"``: the float32 objective every comparison measures with)."""
    if precision is not None:
        plan = dataclasses.replace(plan, trainer={**plan.trainer, "precision": precision})
    images = validate_run(plan)
    parts = build_parts(plan)
    stage = stages(plan)[-1]
    prepared = nst_run.prepare_stage(plan, images, stage.size, check_layers(images, parts.network))
    objective = nst_run.build_objective(images, parts, prepared, stage).to(device)
    init = torch.cat([nst_run.start_image(image.config, prepared) for image in images]).to(device)
    return objective, init


def total_loss(objective: Objective, image: Tensor) -> Tensor:
    """The total loss of each image (K, 3, H, W) in [0, 1] units: shape (K,)."""
    return objective(image)["total"]


def objective_network(objective: Objective) -> nn.Module:
    """The network the objective evaluates, giving the features of the objective's layers by name."""
    return _Layers(objective.network, objective.layers)


def content_shape(objective: Objective) -> tuple[int, ...]:
    """The shape of the objective's content image, (1, 3, H, W): that of one optimised image."""
    return tuple(objective.content.shape)


def our_lbfgs(params: Iterable[Tensor], plan: Plan) -> LBFGS:
    """The product's L-BFGS with the plan's settings."""
    return instantiate(plan.optimizer)(list(params))


def module_image(module: L.LightningModule) -> Tensor:
    """The images a run's module optimises, (K, 3, H, W) on its device."""
    return module.image


class _Layers(nn.Module):
    """A network that returns the features of a fixed set of layers, computed up to the deepest of them."""

    def __init__(self, network: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.network, self.layers = network, list(layers)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        return self.network(image, self.layers)


def build_vgg19(source: str, layers: Sequence[str], pooling: str = "max") -> nn.Module:
    """VGG19 from ``source`` giving the features of ``layers``."""
    return _Layers(VGG(source=source, pooling=pooling), layers)


def layer_channels(name: str) -> int:
    return VGG19[name][0]


def layer_downsampling(name: str) -> int:
    return VGG19[name][1]
