"""The package as the benchmarks use it: every import of ``nst_lightning`` in benchmarks/ is in this module.

The benchmarks hold a plan (``Plan``) and an objective (``Objective``) only to hand them back to the functions here,
so that a change to how the package turns a configuration into objects is met in this one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import Tensor, nn

import nst_lightning.engine.run as nst_run
from nst_lightning.config.plan import RunPlan, build_plan
from nst_lightning.config.schema import conf_dir, register_configs
from nst_lightning.engine.memory import cpu_flags, estimate_peak_bytes, native_bf16_cpu
from nst_lightning.inputs.images import load_image, save_png, white_noise
from nst_lightning.inputs.prepare import initial_image, prepare
from nst_lightning.model.losses import content_loss, gram_over_m, style_layer_loss
from nst_lightning.model.objective import Objective
from nst_lightning.model.vgg import build_network, build_vgg19, layer_channels, layer_downsampling
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

Plan = RunPlan  # what the package makes of a configuration before it builds anything


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The configuration that ``python -m nst_lightning *overrides`` composes."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def run(cfg: DictConfig, folder: Path, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """One run of the product into ``folder``, ``callbacks`` added to every stage's Trainer: its metrics."""
    return nst_run.run(cfg, folder, callbacks=callbacks)


def plan_of(cfg: DictConfig) -> Plan:
    return build_plan(cfg)


def configure_device(plan: Plan) -> None:
    """The device settings (CUDA flags) that a run of ``plan`` makes before its first step."""
    nst_run.configure_device(plan)


def plan_network(plan: Plan) -> nn.Module:
    """The plan's frozen network, cut after the deepest layer in use (what the product's run builds)."""
    net = plan.network
    return build_network(
        net.arch.value,
        net.source.value,
        net.layers,
        net.pooling.value,
        seed=net.seed,
        weights=net.weights,
        channels_last=net.channels_last,
        normalisation_floor=net.normalisation_floor,
    )


def objective_of(
    plan: Plan, device: str | torch.device = "cpu", precision: str | None = None
) -> tuple[Objective, Tensor]:
    """(objective, start images (K, 3, H, W)) of the last stage of ``plan`` on ``device``, built as the run builds
    them. ``precision`` replaces the plan's (``"32-true"``: the float32 objective every comparison measures with)."""
    stage = plan.stages[-1]
    weights = [image.weights for image in plan.images]
    prepared = prepare(
        plan.inputs, stage.size, color=any(w.color for w in weights), temporal=any(w.temporal for w in weights)
    )
    objective = Objective(
        plan_network(plan), prepared, weights, stage.content_scale, plan.style_loss, precision or plan.engine.precision
    ).to(device)
    init = torch.cat([initial_image(image, prepared) for image in plan.images]).to(device)
    return objective, init


def total_loss(objective: Objective, image: Tensor) -> Tensor:
    """The total loss of each image (K, 3, H, W) in [0, 1] units: shape (K,)."""
    return objective(image)["total"]


def objective_network(objective: Objective) -> nn.Module:
    """The cut network the objective evaluates: features by layer name."""
    return objective.network


def content_shape(objective: Objective) -> tuple[int, ...]:
    """The shape of the objective's content image, (1, 3, H, W): that of one optimised image."""
    return tuple(objective.content.shape)


def our_lbfgs(params: Iterable[Tensor], plan: Plan) -> LBFGS:
    """The product's L-BFGS with the plan's settings."""
    spec = plan.optimizer
    return LBFGS(list(params), history_size=spec.history_size, first_step=spec.first_step, max_step=spec.max_step)


def module_image(module: L.LightningModule) -> Tensor:
    """The images a run's module optimises, (K, 3, H, W) on its device."""
    return module.image
