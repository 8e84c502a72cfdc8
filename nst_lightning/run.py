"""The path of one run: validated config -> images -> network -> StyleTransfer -> Trainer.fit -> results."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from nst_lightning.callbacks import FinalReport, GracefulStop, ProgressBar, Snapshots
from nst_lightning.config import layers_in_use, loss_weights, min_image_side, style_weights, validate
from nst_lightning.errors import NSTError
from nst_lightning.images import load_image, white_noise
from nst_lightning.module import StyleTransfer
from nst_lightning.vgg import build_vgg19

log = logging.getLogger(__name__)

# Lightning's advice for data-heavy training does not apply: our "dataset" is a step counter.
# And Lightning's own use of a torch API that torch now deprecates is not the user's concern.
for _pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*", ".*treespec, LeafSpec.*"):
    warnings.filterwarnings("ignore", message=_pattern)


def _check_image_size(image: torch.Tensor, what: str, minimum: int) -> None:
    h, w = image.shape[-2:]
    if min(h, w) < minimum:
        raise NSTError(
            f"{what} is {w}x{h} px after resizing, too small for the deepest layer in use: "
            f"its short side must be >= {minimum} px (raise size/style_size or use shallower layers)"
        )


def load_images(cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(content, style, initial image), all (1, 3, H, W) in [0, 1]; the generated image takes the content's shape."""
    minimum = min_image_side(cfg)
    content = load_image(cfg.content, cfg.size, "content image")
    _check_image_size(content, "the content image", minimum)
    style = load_image(cfg.style, cfg.style_size or cfg.size, "style image")
    _check_image_size(style, "the style image", minimum)
    kind = cfg.init.kind
    if kind == "noise":
        init = white_noise(tuple(content.shape), cfg.seed)
    elif kind == "content":
        init = content.clone()
    else:
        start = style if kind == "style" else load_image(cfg.init.path, None, "init image")
        init = torch.nn.functional.interpolate(start, size=content.shape[-2:], mode="bilinear", antialias=True)
        init = init.clamp(0, 1)
    return content, style, init


def hyperparameters(cfg: DictConfig) -> dict[str, Any]:
    """The knobs of a run, flat, for TensorBoard's HParams tab and metrics.json."""
    alpha, beta = loss_weights(cfg)
    keep = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "trainer"}
    flat: dict[str, Any] = {}
    for key, value in keep.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    flat.update(alpha=alpha, beta=beta, precision=str(cfg.trainer.get("precision", "32-true")))
    return {k: (str(v) if isinstance(v, list | tuple) or v is None else v) for k, v in flat.items()}


def build_module(cfg: DictConfig) -> StyleTransfer:
    content, style, init = load_images(cfg)
    net = cfg.network
    seed = cfg.seed if net.seed is None else net.seed
    network = build_vgg19(net.source, layers_in_use(cfg), net.pooling, seed=seed, weights=net.weights)
    alpha, beta = loss_weights(cfg)
    opt = cfg.optimizer
    return StyleTransfer(
        network,
        content,
        style,
        init,
        content_layer=cfg.content_layer,
        style_weights=style_weights(cfg),
        alpha=alpha,
        beta=beta,
        tv_weight=cfg.tv_weight,
        optimizer=opt.name,
        lr=opt.lr,
        history_size=opt.history_size,
        betas=tuple(opt.betas),
        steps=cfg.steps,
    )


def resume_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """``resume=<run dir>``: that run's own configuration and its checkpoint (image, optimiser, step)."""
    old = Path(cfg.resume)
    checkpoint, saved = old / "last.ckpt", old / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise NSTError(f"resume={old}: not a run folder (no .hydra/config.yaml there)")
    if not checkpoint.is_file():
        raise NSTError(f"resume={old}: no last.ckpt there; only a run stopped by Ctrl-C or SIGTERM can be resumed")
    old_cfg = OmegaConf.load(saved)
    old_cfg.resume = None
    return old_cfg, checkpoint


def run(
    cfg: DictConfig, run_dir: str | Path, tensorboard_dir: str | Path | None = None, run_name: str | None = None
) -> dict[str, Any]:
    """Run one style transfer into ``run_dir``; return the final metrics (also in run_dir/metrics.json).

    TensorBoard events go to run_dir/tensorboard, or, for a sweep, to tensorboard_dir/run_name.
    With ``resume=<run dir>`` the interrupted run continues, with its own settings, into ``run_dir``.
    """
    checkpoint = None
    if cfg.get("resume"):
        cfg, checkpoint = resume_config(cfg)
    validate(cfg)
    run_dir = Path(run_dir)
    if (run_dir / "result.png").exists():
        raise NSTError(f"{run_dir} already holds a result.png: pick another hydra.run.dir, nothing was overwritten")
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg)
    hparams = hyperparameters(cfg)
    stop = GracefulStop()
    report = FinalReport(run_dir, hparams, info={"alpha": hparams["alpha"], "beta": hparams["beta"]}, stop=stop)
    if tensorboard_dir is None:
        logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="tensorboard", default_hp_metric=False)
    else:
        logger = TensorBoardLogger(save_dir=str(tensorboard_dir), name=run_name, version="", default_hp_metric=False)
    callbacks: list[L.Callback] = [Snapshots(run_dir / "snapshots", cfg.snapshot_every), stop, report]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(ProgressBar())
    trainer = L.Trainer(
        max_steps=cfg.steps,
        max_epochs=-1,  # steps alone bound a run: after an early stop + resume, the epoch count is past 1
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(run_dir),
        **OmegaConf.to_container(cfg.trainer, resolve=True),
    )
    trainer.fit(module, ckpt_path=checkpoint, weights_only=True)  # a checkpoint is data, never code
    if not report.metrics:
        raise NSTError(f"the run stopped before its first step (steps={cfg.steps}): nothing was optimised")
    if module.diverged_at is not None:
        log.error("the loss became non-finite at step %d: kept the last finite image", module.diverged_at)
    log.info("result: %s", run_dir / "result.png")
    return report.metrics
