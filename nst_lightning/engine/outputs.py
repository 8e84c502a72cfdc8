"""Where a run's results go: one folder per generated image, each with its own logger run and HParams.

A plain run writes into the run folder itself; a batched sweep gives each image a subfolder named by its swept
values, with its own ``.hydra/config.yaml`` and ``overrides.yaml``, so the report reads a batch like a multirun.
The logs of an image go to ``<folder>/tensorboard/`` (``logs/`` for loggers other than TensorBoard), or, in a
sweep, to the sweep's one folder, each image a run named by its swept keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf

from nst_lightning.config.derive import Image, flatten_config, loss_weights, record
from nst_lightning.util.files import check_writable


@dataclass
class ImageRun:
    """Where one generated image's results go (a batched sweep has one per image)."""

    folder: Path  # result.png, metrics.json, snapshots/
    logger: Logger  # its own run: losses, snapshots, HParams
    hparams: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # extra entries for metrics.json


def hyperparameters(image: Image, alpha: float, beta: float) -> dict[str, Any]:
    """The knobs of one image, flat, for the HParams tab: the paper's alpha and beta among them."""
    flat = flatten_config(record(image.config))
    flat.update(alpha=alpha, beta=beta, precision=str(image.config.trainer.get("precision", "32-true")))
    return {k: (str(v) if isinstance(v, list | tuple) or v is None else v) for k, v in flat.items()}


def log_folder(factory: Callable[..., Logger]) -> str:
    """``tensorboard`` for TensorBoard's logger (the name the folder has always had), ``logs`` for the others."""
    target = getattr(factory, "func", factory)
    return "tensorboard" if getattr(target, "__name__", "") == "TensorBoardLogger" else "logs"


def image_runs(
    images: Sequence[Image],
    logger: Callable[..., Logger],
    folder: Path,
    tensorboard_dir: str | Path | None,
    run_name: str | None,
    info: dict[str, Any],
    record_images: bool = True,
) -> list[ImageRun]:
    """Each image's folder and logger run; ``record_images``: write each batch image's ``.hydra`` record (only the
    rank that writes does, on several devices)."""
    runs = []
    logs = log_folder(logger)
    for index, image in enumerate(images):
        safe = image.name.replace("/", "_")
        sub = folder / safe if image.name else folder
        if image.name and record_images:
            (sub / ".hydra").mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(record(image.config)), sub / ".hydra" / "config.yaml")
            OmegaConf.save(OmegaConf.create(image.overrides), sub / ".hydra" / "overrides.yaml")
        if tensorboard_dir is None:
            where = logger(save_dir=str(folder), name="", version=logs + (f"/{safe}" if image.name else ""))
        else:
            label = ",".join(filter(None, [run_name, safe]))
            where = logger(save_dir=str(tensorboard_dir), name=label, version="")
        alpha, beta = loss_weights(image.config)
        extra = {"alpha": alpha, "beta": beta, **({"batch_index": index} if image.name else {})}
        runs.append(ImageRun(sub, where, hyperparameters(image, alpha, beta), {**extra, **info}))
    return runs


def check_outputs(runs: list[ImageRun], snapshots: bool) -> None:
    """Every place the run writes to (each image's folder, snapshots/, TensorBoard folder) tried before the first
    step: a read-only one, or a file in the way, is refused in one line naming it, not met mid-run."""
    for run in runs:
        check_writable(run.folder, "run folder")
        if snapshots:
            check_writable(run.folder / "snapshots", "snapshots folder")
        if (logs := getattr(run.logger, "log_dir", None)) is not None:
            kind = "TensorBoard" if type(run.logger).__name__ == "TensorBoardLogger" else "log"
            check_writable(logs, f"{kind} folder")
