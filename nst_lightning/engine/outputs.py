"""Where a run's results go: one folder per generated image, each with its own TensorBoard run and HParams.

A plain run writes into the run folder itself; a batched sweep gives each image a subfolder named by its swept
values, with its own ``.hydra/config.yaml`` and ``overrides.yaml``, so the report reads a batch like a
multirun.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from nst_lightning.config.plan import ImageSpec, RunPlan, flatten_config
from nst_lightning.util.files import check_writable


@dataclass
class ImageRun:
    """Where one generated image's results go (a batched sweep has one per image)."""

    folder: Path  # result.png, metrics.json, snapshots/
    logger: TensorBoardLogger  # its own TensorBoard run: losses, snapshots, HParams
    hparams: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # extra entries for metrics.json


def hyperparameters(image: ImageSpec, plan: RunPlan) -> dict[str, Any]:
    """The knobs of one image, flat, for TensorBoard's HParams tab: the paper's alpha and beta among them."""
    flat = flatten_config(image.record)
    flat.update(alpha=image.weights.alpha, beta=image.weights.beta, precision=plan.engine.precision)
    return {k: (str(v) if isinstance(v, list | tuple) or v is None else v) for k, v in flat.items()}


def image_runs(
    plan: RunPlan, folder: Path, tensorboard_dir: str | Path | None, run_name: str | None, info: dict[str, Any]
) -> list[ImageRun]:
    runs = []
    for index, image in enumerate(plan.images):
        safe = image.name.replace("/", "_")
        sub = folder / safe if image.name else folder
        if image.name:
            (sub / ".hydra").mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(image.record), sub / ".hydra" / "config.yaml")
            OmegaConf.save(OmegaConf.create(image.overrides), sub / ".hydra" / "overrides.yaml")
        if tensorboard_dir is None:
            version = "tensorboard" + (f"/{safe}" if image.name else "")
            logger = TensorBoardLogger(save_dir=str(folder), name="", version=version, default_hp_metric=False)
        else:
            label = ",".join(filter(None, [run_name, safe]))
            logger = TensorBoardLogger(save_dir=str(tensorboard_dir), name=label, version="", default_hp_metric=False)
        extra = {
            "alpha": image.weights.alpha,
            "beta": image.weights.beta,
            **({"batch_index": index} if image.name else {}),
        }
        runs.append(ImageRun(sub, logger, hyperparameters(image, plan), {**extra, **info}))
    return runs


def check_outputs(runs: list[ImageRun], snapshots: bool) -> None:
    """Every place the run writes to (each image's folder, snapshots/, TensorBoard folder) tried before the first
    step: a read-only one, or a file in the way, is refused in one line naming it, not met mid-run."""
    for run in runs:
        check_writable(run.folder, "run folder")
        if snapshots:
            check_writable(run.folder / "snapshots", "snapshots folder")
        check_writable(run.logger.log_dir, "TensorBoard folder")
