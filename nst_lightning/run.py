"""The path of one run: validated config -> images -> network -> StyleTransfer -> Trainer.fit -> results."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from nst_lightning.callbacks import FinalReport, GracefulStop, ImageRun, LossCurves, ProgressBar, Snapshots, write_json
from nst_lightning.color import color_stats, luminance, match_color, matched_luminance
from nst_lightning.config import (
    batch_configs,
    batch_sweep,
    layers_in_use,
    loss_weights,
    min_image_side,
    stages,
    style_blend,
    style_paths,
    style_weights,
    validate,
    value_label,
)
from nst_lightning.errors import NSTError, first_line
from nst_lightning.images import load_image, white_noise
from nst_lightning.memory import check_memory, slow_precision_warning
from nst_lightning.module import Inputs, LossWeights, StyleTransfer
from nst_lightning.vgg import VGG19Features, build_vgg19

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


def _resized_to(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``image`` at the height and width of ``like`` (bilinear, antialiased), in [0, 1]."""
    if image.shape[-2:] == like.shape[-2:]:
        return image
    return F.interpolate(image, size=like.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1)


def load_images(cfg: DictConfig, size: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(content, styles): (1, 3, H, W) in [0, 1]; the generated image takes the content's shape.

    ``size``: the long side of this stage (coarse-to-fine), default ``cfg.size``; the styles get
    ``style_size`` pixels, else ``style_scale`` times the stage's size.
    """
    size = size or cfg.size
    minimum = min_image_side(cfg)
    content = load_image(cfg.content, size, "content image")
    _check_image_size(content, "the content image", minimum)
    style_side = cfg.style_size or max(1, round(size * cfg.style_scale))
    styles = []
    for path in style_paths(cfg):
        style = load_image(path, style_side, "style image")
        _check_image_size(style, f"the style image {path}", minimum)
        styles.append(style)
    return content, styles


def initial_image(cfg: DictConfig, inputs: Inputs) -> torch.Tensor:
    """The start of the optimisation (1, 3, H, W): white noise, the content, the (first) style or any image."""
    content = inputs.content
    kind = cfg.init.kind
    if kind == "noise":
        return white_noise(tuple(content.shape), cfg.seed)
    if kind == "content":
        return content.clone()
    side = max(content.shape[-2:])  # decode large files at the size they will be used at, not in full
    start = inputs.styles[0] if kind == "style" else load_image(cfg.init.path, side, "init image")
    return _resized_to(start, content)


def _mixture_color_stats(images: list[torch.Tensor], blend: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB mean and covariance of the blend of several images' pixels (a mixture: sum b_i of second moments)."""
    stats = [color_stats(image) for image in images]
    mean = sum(b * m for b, (m, _) in zip(blend, stats, strict=True))
    second = sum(b * (c + m[..., None] * m[:, None]) for b, (m, c) in zip(blend, stats, strict=True))
    return mean, second - mean[..., None] * mean[:, None]


def build_inputs(cfg: DictConfig, network: VGG19Features, content: torch.Tensor, styles: list[torch.Tensor]) -> Inputs:
    """Everything the losses compare against, after the colour options have been applied."""
    blend = style_blend(cfg)
    chroma = None
    if cfg.preserve_color == "histogram":  # recolour the styles to the content's colour statistics
        styles = [match_color(style, content) for style in styles]
    elif cfg.preserve_color == "luminance":  # transfer on luminance only; the content's chroma comes back at the end
        chroma = content
        styles = [matched_luminance(style, content) for style in styles]
        content = luminance(content)
    inputs = Inputs(network, content, styles, blend, chroma=chroma)
    if any(one.color_weight > 0 for _, one in batch_configs(cfg)):
        inputs.color_target = (
            color_stats(content) if cfg.color_target == "content" else _mixture_color_stats(styles, blend)
        )
    if cfg.content_mask:
        side = max(content.shape[-2:])
        mask = _resized_to(load_image(cfg.content_mask, side, "content_mask"), content).mean(1, keepdim=True)
        if mask.max() < 0.5:
            raise NSTError(f"content_mask={cfg.content_mask} has no white area: the style would go nowhere")
        inputs.mask = mask
    if cfg.temporal_weight > 0:
        frame = load_image(cfg.temporal_target, max(content.shape[-2:]), "temporal_target")
        inputs.temporal_target = _resized_to(frame, content)
    return inputs


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


def image_loss_weights(cfg: DictConfig, content_scale: float = 1.0) -> LossWeights:
    alpha, beta = loss_weights(cfg)
    return LossWeights(
        content_layer=cfg.content_layer,
        style_weights=style_weights(cfg),
        alpha=alpha * content_scale,
        beta=beta,
        tv=cfg.tv_weight,
        color=cfg.color_weight,
        temporal=cfg.temporal_weight,
    )


def build_module(
    cfg: DictConfig,
    size: int | None = None,
    steps: int | None = None,
    start: torch.Tensor | None = None,
    content_scale: float = 1.0,
) -> StyleTransfer:
    """The module for ``cfg`` (one image, or one per entry of ``batch_sweep``); ``size``/``steps``/``start``
    override the stage's long side, step count and initial image (coarse-to-fine), and ``content_scale``
    multiplies alpha (a coarse stage keeps the output size's balance of content and style)."""
    batch = batch_configs(cfg)
    content, styles = load_images(cfg, size)
    net = cfg.network
    layers = list(dict.fromkeys(layer for _, one in batch for layer in layers_in_use(one)))
    seed = cfg.seed if net.seed is None else net.seed
    network = build_vgg19(
        net.source, layers, net.pooling, seed=seed, weights=net.weights, channels_last=net.channels_last
    )
    inputs = build_inputs(cfg, network, content, styles)
    if start is not None:
        init = _resized_to(start, content)
    else:
        init = torch.cat([initial_image(one, inputs) for _, one in batch])
    opt = cfg.optimizer
    return StyleTransfer(
        inputs,
        init,
        [image_loss_weights(one, content_scale) for _, one in batch],
        optimizer=opt.name,
        lr=opt.lr,
        history_size=opt.history_size,
        betas=tuple(opt.betas),
        steps=steps or cfg.steps,
    )


def resume_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """``resume=<run dir>``: that run's own configuration and its checkpoint (image, optimiser, step)."""
    old = Path(cfg.resume)
    checkpoint, saved = old / "last.ckpt", old / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise NSTError(f"resume={old}: not a run folder (no .hydra/config.yaml there)")
    if not checkpoint.is_file():
        raise NSTError(f"resume={old}: no last.ckpt there; only a run stopped by Ctrl-C or SIGTERM can be resumed")
    try:  # refuse a corrupt or unsafe checkpoint now, in one line, before any heavy work
        torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise NSTError(f"resume={old}: last.ckpt cannot be loaded as plain data ({first_line(exc)})") from None
    old_cfg = OmegaConf.load(saved)
    old_cfg.resume = None
    return old_cfg, checkpoint


def _image_runs(
    cfg: DictConfig, folder: Path, tensorboard_dir: str | Path | None, run_name: str | None, info: dict[str, Any]
) -> list[ImageRun]:
    """Where each image's results go: the run folder itself, or one subfolder per image of a batched sweep
    (each with its own .hydra/config.yaml, so ``nst_lightning.report`` reads a batch like a multirun)."""
    runs = []
    for index, (name, one) in enumerate(batch_configs(cfg)):
        safe = name.replace("/", "_")
        sub = folder / safe if name else folder
        if name:
            (sub / ".hydra").mkdir(parents=True, exist_ok=True)
            OmegaConf.save(one, sub / ".hydra" / "config.yaml")
            swept = [(key, one.init.kind if key == "init" else one[key]) for key in batch_sweep(cfg)]
            overrides = [f"{key}={value_label(value)}" for key, value in swept]  # report orders its axes by these
            OmegaConf.save(overrides, sub / ".hydra" / "overrides.yaml")
        if tensorboard_dir is None:
            version = "tensorboard" + (f"/{safe}" if name else "")
            logger = TensorBoardLogger(save_dir=str(folder), name="", version=version, default_hp_metric=False)
        else:
            label = ",".join(filter(None, [run_name, safe]))
            logger = TensorBoardLogger(save_dir=str(tensorboard_dir), name=label, version="", default_hp_metric=False)
        hparams = hyperparameters(one)
        extra = {"alpha": hparams["alpha"], "beta": hparams["beta"], **({"batch_index": index} if name else {})}
        runs.append(ImageRun(sub, logger, hparams, {**extra, **info}))
    return runs


def _fit(
    cfg: DictConfig, module: StyleTransfer, runs: list[ImageRun], folder: Path, checkpoint: Path | None
) -> list[dict[str, Any]]:
    """One Trainer.fit of ``module``; the metrics of each image."""
    stop = GracefulStop()
    report = FinalReport(runs, folder, stop=stop)
    callbacks: list[L.Callback] = [LossCurves(runs), Snapshots(runs, cfg.snapshot_every), stop, report]
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args.pop("log_every_n_steps", None)  # losses go to TensorBoard every step, through LossCurves
    if trainer_args.get("enable_progress_bar", True):
        callbacks.append(ProgressBar())
    trainer = L.Trainer(
        max_steps=module.steps,
        max_epochs=-1,  # steps alone bound a run: after an early stop + resume, the epoch count is past 1
        logger=False,  # each image has its own TensorBoard run (ImageRun.logger), written by the callbacks
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(folder),
        **trainer_args,
    )
    trainer.fit(module, ckpt_path=checkpoint, weights_only=True)  # a checkpoint is data, never code
    if not report.metrics:
        raise NSTError(f"the run stopped before its first step (steps={module.steps}): nothing was optimised")
    for (name, _), step in zip(batch_configs(cfg), module.diverged_at, strict=True):
        if step is not None:
            log.error(
                "%sthe loss became non-finite at step %d: kept the last finite image", f"{name}: " * bool(name), step
            )
    return report.metrics


def run(
    cfg: DictConfig, run_dir: str | Path, tensorboard_dir: str | Path | None = None, run_name: str | None = None
) -> dict[str, Any]:
    """Run one style transfer into ``run_dir``; return the final metrics (also in run_dir/metrics.json).

    TensorBoard events go to run_dir/tensorboard, or, for a sweep, to tensorboard_dir/run_name.
    With ``resume=<run dir>`` the interrupted run continues, with its own settings, into ``run_dir``.
    With ``scales=[...]`` each stage but the last runs in run_dir/stages/<i>_<size>px, the next starting from
    its result upsampled. With ``batch_sweep`` each image has a subfolder, and run_dir/metrics.json lists them.
    """
    checkpoint = None
    if cfg.get("resume"):
        cfg, checkpoint = resume_config(cfg)
    validate(cfg)
    check_memory(cfg)  # a run that cannot fit is refused now, with the estimate, not killed later
    if slow := slow_precision_warning(cfg):
        log.warning(slow)
    run_dir = Path(run_dir)
    for done in ("result.png", "metrics.json"):
        if (run_dir / done).exists():
            raise NSTError(f"{run_dir} already holds a {done}: pick another hydra.run.dir, nothing was overwritten")
    plan = stages(cfg)
    if checkpoint is not None and len(plan) > 1:
        raise NSTError("resume of a coarse-to-fine run (scales=...) is not supported: rerun it, or resume one stage")
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    start, started, metrics = None, time.perf_counter(), []
    for i, (size, steps) in enumerate(plan):
        final = i == len(plan) - 1
        folder = run_dir if final else run_dir / "stages" / f"{i}_{size}px"
        # L_content sums over the M_l positions of its layer (~ size^2) while E_l is normalised by M_l^2: the
        # ratio is meant at the output size, so a coarse stage scales alpha by (output size / stage size)^2.
        scale = (plan[-1][0] / size) ** 2
        module = build_module(cfg, size=size, steps=steps, start=start, content_scale=scale)
        info = {} if len(plan) == 1 else {"stage": i, "stages": [list(p) for p in plan]}
        runs = _image_runs(cfg, folder, tensorboard_dir if final else None, run_name, info)
        metrics = _fit(cfg, module, runs, folder, checkpoint)
        if metrics[0]["interrupted"]:
            break
        start = module.generated(module.image.detach())  # the next stage starts here, upsampled
    for m in metrics if len(plan) > 1 else []:
        m["seconds_all_stages"] = time.perf_counter() - started
    if len(metrics) == 1:
        if len(plan) > 1:
            write_json(metrics[0], Path(runs[0].folder) / "metrics.json")
        log.info("result: %s", runs[0].folder / "result.png")
        return metrics[0]
    summary = {
        "batch": {run.folder.name: m for run, m in zip(runs, metrics, strict=True)},
        "loss_total": min(m["loss_total"] for m in metrics),
        "interrupted": metrics[0]["interrupted"],
    }
    write_json(summary, run_dir / "metrics.json")
    log.info("results: %s", ", ".join(str(run.folder / "result.png") for run in runs))
    return summary
