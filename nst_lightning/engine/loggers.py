"""Each generated image gets its own Lightning logger: ``logger=`` picks the kind (tensorboard, csv, mlflow, wandb).

A logger option is a factory called as ``factory(save_dir=..., name=..., version=...)`` for every image:
TensorBoardLogger and CSVLogger take those arguments themselves; MLflow and Weights & Biases name their runs
differently, so they come through the two small adapters below. ``log_image`` sends a picture wherever the logger
can hold one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from torch import Tensor

from nst_lightning.util.errors import NSTError


def _missing(package: str, extra: str) -> NSTError:
    return NSTError(f'logger={extra} needs the {package} package: pip install "nst-lightning[{extra}]"')


def mlflow_logger(
    save_dir: str, name: str, version: str, experiment_name: str = "nst_lightning", tracking_uri: str | None = None
) -> Logger:
    """An MLflow run per image (named by its swept values), in ``tracking_uri`` (default: ``mlflow.db``, an SQLite
    store, beside the image's other logs, its artifacts in ``mlartifacts/`` there: MLflow 3 no longer takes a plain
    folder as a store)."""
    try:
        import mlflow  # noqa: F401
        from lightning.pytorch.loggers import MLFlowLogger
    except ImportError:
        raise _missing("mlflow", "mlflow") from None
    folder = Path(save_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name="/".join(filter(None, [name, version])) or None,
        tracking_uri=tracking_uri or f"sqlite:///{folder / 'mlflow.db'}",
        artifact_location=None if tracking_uri else (folder / "mlartifacts").as_uri(),
    )


def wandb_logger(
    save_dir: str, name: str, version: str, project: str = "nst_lightning", offline: bool = False
) -> Logger:
    """A Weights & Biases run per image (``offline=true`` without a network: ``wandb sync`` uploads it later)."""
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:
        raise _missing("wandb", "wandb") from None
    run = "/".join(filter(None, [name, version])) or None
    folder = Path(save_dir, version)  # wandb/ inside the image's logs/, as the other loggers' files
    folder.mkdir(parents=True, exist_ok=True)
    return WandbLogger(name=run, save_dir=str(folder), project=project, offline=offline)


def log_image(logger: Logger, tag: str, image: Tensor, step: int) -> None:
    """An image (3, H, W) in [0, 1] to ``logger``, where its kind can hold images (CSV cannot: nothing)."""
    experiment: Any = logger.experiment
    kind = type(logger).__name__
    if kind == "TensorBoardLogger":
        experiment.add_image(tag, image, step)
    elif kind == "WandbLogger":
        logger.log_image(key=tag, images=[image.permute(1, 2, 0).numpy()], step=step)  # type: ignore[attr-defined]
    elif kind == "MLFlowLogger":
        experiment.log_image(logger.run_id, image.permute(1, 2, 0).numpy(), f"{tag}/step_{step:06d}.png")


def log_final(logger: Logger, hparams: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """The run's knobs and final values: in TensorBoard's HParams tab side by side (its logger takes both at once),
    elsewhere as the run's parameters and metrics."""
    if type(logger).__name__ == "TensorBoardLogger":
        logger.log_hyperparams(hparams, metrics)  # type: ignore[call-arg]
        return
    logger.log_hyperparams(hparams)
    logger.log_metrics(metrics, step)
