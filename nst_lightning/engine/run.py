"""One run, as a short list of steps: resume, checks, parts, memory; then for each stage build and fit; then
summarise. ``run`` takes the typed ``Config`` (the plan) and the parts built from it."""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.warnings import PossibleUserWarning
from omegaconf import OmegaConf

from nst_lightning.config.derive import Image, Stage, blend, loss_weights, record, stages, style_paths, style_weights
from nst_lightning.config.derive import images as derive_images
from nst_lightning.config.records import resume
from nst_lightning.config.schema import Config
from nst_lightning.config.validate import check_layers, validate_run
from nst_lightning.engine import distributed
from nst_lightning.engine.callbacks import (
    FinalReport,
    GracefulStop,
    LossCurves,
    PeriodicCheckpoint,
    ProgressBar,
    Snapshots,
)
from nst_lightning.engine.checkpoint_io import AtomicCheckpointIO
from nst_lightning.engine.memory import bf16_tip, plan_memory, slow_precision_warning
from nst_lightning.engine.module import StyleTransfer
from nst_lightning.engine.outputs import ImageRun, check_outputs, image_runs
from nst_lightning.engine.parts import Parts, build_parts
from nst_lightning.inputs.prepare import Prepared, initial_image, prepare, resized_to
from nst_lightning.model import tiles
from nst_lightning.model.losses import ColorStatistics, Temporal, TotalVariation
from nst_lightning.model.objective import Objective, Weights, targets
from nst_lightning.model.statistics import check_tileable
from nst_lightning.model.tiles import TiledNetwork
from nst_lightning.util import interrupts, ranks
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import atomic_write, write_json

log = logging.getLogger(__name__)
AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}


def _not_an_advert(record: logging.LogRecord) -> bool:
    """Lightning prints a "💡 Tip" for its paid services at every Trainer: once per run and stage, not our users'
    concern."""
    return not str(record.msg).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)


def configure_device(config: Config) -> None:
    """CUDA: TF32 convolutions (fp32 sums) unless engine.tf32=false; cuDNN picks the fastest kernels for the
    run's fixed shapes. Matmuls stay fp32: L-BFGS's curvature products need the digits."""
    if torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = config.engine.tf32
        torch.backends.cudnn.benchmark = True


def precision(config: Config) -> str:
    return str(config.trainer.get("precision", "32-true"))


def style_side(config: Config, size: int) -> int:
    return config.style_size or max(1, round(size * config.style_scale))


def prepare_stage(config: Config, images: Sequence[Image], size: int, min_side: int) -> Prepared:
    """The stage's images, with the colour options of the run."""
    color = any(image.config.color_weight > 0 for image in images)
    temporal = any(image.config.temporal_weight > 0 for image in images)
    return prepare(
        str(config.content),
        style_paths(config),
        blend(config),
        size,
        style_side(config, size),
        min_side,
        preserve_color=str(config.preserve_color),
        color_target=str(config.color_target) if color else None,
        content_mask=config.content_mask,
        temporal_target=config.temporal_target if temporal else None,
    )


def _extras(images: Sequence[Image], prepared: Prepared, parts: Parts) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image-level terms some image weights, and each one's weights (K,)."""
    configs = [image.config for image in images]
    modules: dict[str, Any] = {}
    weights: dict[str, torch.Tensor] = {}
    if any(c.tv_weight for c in configs):
        modules["tv"], weights["tv"] = TotalVariation(), torch.tensor([float(c.tv_weight) for c in configs])
    if prepared.color_target is not None and any(c.color_weight for c in configs):
        modules["color"] = ColorStatistics(*prepared.color_target)
        weights["color"] = torch.tensor([float(c.color_weight) for c in configs])
    if prepared.temporal_target is not None and any(c.temporal_weight for c in configs):
        modules["temporal"] = Temporal(prepared.temporal_target)
        weights["temporal"] = torch.tensor([float(c.temporal_weight) for c in configs])
    for name, factory in parts.extra_terms.items():
        modules[name] = factory(content=prepared.content, styles=prepared.styles)
        weights[name] = torch.ones(len(configs))
    return modules, weights


def build_objective(
    images: Sequence[Image], parts: Parts, prepared: Prepared, stage: Stage, tile: int | None = None
) -> Objective:
    """The objective of the K images of a stage: targets computed once (``tile``: through exact tiles, for images
    too large to run whole), weights as (K,) tensors."""
    network, configs = parts.network, [image.config for image in images]
    alphas, betas = zip(*(loss_weights(c) for c in configs), strict=True)
    w = [style_weights(c, network.channels) for c in configs]
    content_layers = list(dict.fromkeys(c.content_layer for c, a in zip(configs, alphas, strict=True) if a > 0))
    style_layers = list(dict.fromkeys(n for c, b in zip(configs, betas, strict=True) if b > 0 for n in c.style_layers))
    autocast = AUTOCAST.get(precision(configs[0]))
    content_targets, statistics, shapes = targets(
        network if tile is None else TiledNetwork(network, tile),
        prepared.content,
        prepared.styles,
        content_layers,
        style_layers,
        parts.statistic,
        autocast,
    )
    calibration = next((s[0].calibration for s in statistics.values()), 1.0)
    extras, extra_weights = _extras(images, prepared, parts)
    weights = Weights(
        content_layers=content_layers,
        style_layers=style_layers,
        alpha=torch.tensor([a * stage.content_scale for a in alphas]),
        content_select=torch.tensor([[float(c.content_layer == n) for n in content_layers] for c in configs]),
        beta=torch.tensor([b * calibration for b in betas]),
        style=torch.tensor(
            [[wk.get(n, 0.0) if bk > 0 else 0.0 for n in style_layers] for wk, bk in zip(w, betas, strict=True)]
        ),
        extras=extra_weights,
    )
    objective = Objective(
        network, prepared.content, content_targets, statistics, prepared.blend, weights, extras, prepared.mask, autocast
    )
    objective.set_layer_shapes(shapes)
    objective.begin_step(0, len(images))
    return objective


def build_module(
    config: Config,
    parts: Parts | None = None,
    stage: Stage | None = None,
    start: torch.Tensor | None = None,
    images: Sequence[Image] | None = None,
) -> StyleTransfer:
    """The module of one stage (default: the last); ``start`` (a coarser stage's result) replaces the starts."""
    images = list(images or validate_run(config))
    parts = parts or build_parts(config)
    stage = stage or stages(config)[-1]
    min_side = check_layers(images, parts.network)
    prepared = prepare_stage(config, images, stage.size, min_side)
    tile = config.engine.tile if isinstance(config.engine.tile, int) else None
    objective = build_objective(images, parts, prepared, stage, tile)
    if start is not None:
        init = resized_to(start, prepared.content)
    else:
        init = torch.cat([start_image(image.config, prepared) for image in images])
    module = StyleTransfer(objective, init, parts.optimizer, stage.steps, config.engine, prepared.chroma)
    module.held.prepared = prepared
    if tile is not None:
        module.tiling = objective_tiling(objective, tile, parts.statistic_class, str(config.style_loss))
    return module


def objective_tiling(objective: Objective, tile: int, statistic: type, name: str) -> tiles.Tiling:
    """The exact tiles of a stage's image for its objective (their halo from the network and the terms' context);
    one line where the statistic cannot run in tiles."""
    check_tileable(statistic, getattr(statistic, "__name__", name))
    context: dict[str, int] = {}
    for term in objective.feature_terms:
        context[term.layer] = max(context.get(term.layer, 0), term.module.context)
    grid, halo = tiles.grid_and_halo(objective.network, objective.layers, context)
    height, width = objective.content.shape[-2:]
    return tiles.tiling(height, width, tile, grid, halo)


def start_image(config: Config, prepared: Prepared) -> torch.Tensor:
    return initial_image(str(config.init.kind), int(config.seed), float(config.init.scale), config.init.path, prepared)


def _panel(module: StyleTransfer, tile: int | None) -> Any:
    """The objective-independent measures of each final image against the run's own content and style(s) (in
    exact tiles where the run is tiled)."""
    from nst_lightning.results.metrics import measure, metric_network  # torchmetrics: imported only when measuring

    prepared = module.held.prepared
    content = prepared.content if module.held.chroma is None else module.held.chroma  # the photo in colour

    def panel(images: torch.Tensor) -> list[dict[str, float]]:
        network = metric_network(module.device)
        network = network if tile is None else TiledNetwork(network, tile)
        return [measure(image[None], content, prepared.styles, prepared.blend, network) for image in images]

    return panel


def _callbacks(config: Config, runs: list[ImageRun], folder: Path, module: StyleTransfer) -> list[L.Callback]:
    stop = GracefulStop()
    tile = config.engine.tile if isinstance(config.engine.tile, int) else None
    report = FinalReport(runs, folder, stop=stop, panel=_panel(module, tile) if config.metrics else None)
    engine = config.engine
    callbacks: list[L.Callback] = [LossCurves(runs), Snapshots(runs, config.snapshot_every), stop]
    callbacks += [PeriodicCheckpoint(folder, engine.checkpoint_every, engine.checkpoint_minutes), report]
    if config.trainer.get("enable_progress_bar", True):
        callbacks.append(ProgressBar())
    return callbacks


def _fit(
    config: Config,
    module: StyleTransfer,
    runs: list[ImageRun],
    folder: Path,
    checkpoint: Path | None,
    extra: Sequence[L.Callback],
    world: int = 1,
) -> list[dict[str, Any]]:
    """One Trainer.fit of ``module`` (on ``world`` devices); the metrics of each image."""
    callbacks = _callbacks(config, runs, folder, module)
    report = next(c for c in callbacks if isinstance(c, FinalReport))
    stop = next(c for c in callbacks if isinstance(c, GracefulStop))
    trainer_args = {k: v for k, v in config.trainer.items() if k != "precision"}
    trainer_args["strategy"] = distributed.lightning_strategy(trainer_args.get("strategy", "auto"), world)
    trainer = L.Trainer(
        max_steps=module.steps,
        max_epochs=-1,  # steps alone bound a run: after an early stop + resume, the epoch count is past 1
        logger=[run.logger for run in runs],  # each image its own run; the callbacks write to them
        callbacks=[*callbacks, *extra],
        enable_checkpointing=False,  # last.ckpt is written by PeriodicCheckpoint and FinalReport, atomically
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=str(folder),
        precision="32-true",  # the objective runs its own autocast (trainer.precision), capturable on CUDA
        plugins=[AtomicCheckpointIO(), *(trainer_args.pop("plugins", None) or [])],  # checkpoints in place
        use_distributed_sampler=False,  # every rank counts every step: the data is a step counter
        **trainer_args,
    )
    with warnings.catch_warnings():
        # Lightning's advice for data-heavy training does not apply: our "dataset" is a step counter.
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's own use of a deprecated torch API
        interrupts.check()  # a signal while the Trainer was built; from fit on, GracefulStop takes it
        trainer.fit(module, ckpt_path=checkpoint, weights_only=True)  # a checkpoint is data, never code
    if not report.metrics:
        if stop.received is not None:  # it came while the Trainer started: nothing was optimised
            raise interrupts.Interrupted(stop.received)
        raise NSTError(f"the run stopped before its first step (steps={module.steps}): nothing was optimised")
    for run, metrics in zip(runs, report.metrics, strict=True):
        if metrics["diverged"] and trainer.is_global_zero:
            label = f"{run.folder.name}: " if len(runs) > 1 else ""
            step = metrics["diverged_at_step"]
            log.error("%sthe loss became non-finite at step %d: kept the last finite image", label, step)
    return report.metrics


def _spread(module: StyleTransfer, world: int, rank: int, tile: int | None) -> None:
    """This rank's part of a run on ``world`` devices: its share of a batch's images, or of one image's tiles."""
    if world == 1:
        return
    if module.num_images > 1:
        module.take_share(distributed.Share.of(module.num_images, world, rank))
    else:
        assert module.tiling is not None and tile is not None  # distributed.check_devices refused it untiled
        distributed.check_tiles(len(module.tiling.tiles), world, tile)
        module.reduce = distributed.Collectives(rank, world)


def _record(config: Config, run_dir: Path) -> None:
    """The run folder records the settings the run used, so that it can be resumed and reported in turn: Hydra's
    record is the command line's (for a resumed run, the defaults plus resume=; engine.tile=auto where the memory plan
    chose a tile and a history), so this one replaces it, atomically."""
    text = OmegaConf.to_yaml(OmegaConf.create(record(config)))
    atomic_write(run_dir / ".hydra" / "config.yaml", lambda f: f.write(text.encode()))


def _fit_memory(config: Config, images: list[Image], parts: Parts) -> tuple[Config, list[Image], Parts]:
    """The run as the memory plan fits it: engine.tile=auto becomes the tile side chosen (or untiled), and a shorter
    L-BFGS history where even the smallest tile needs one; said in one line; the record holds what ran."""
    fit = plan_memory(config, images, parts)
    if fit.said:
        log.info(fit.said)
    engine = dataclasses.replace(config.engine, tile=fit.tile)
    optimizer = config.optimizer
    if fit.history_size is not None:
        optimizer = dataclasses.replace(optimizer, history_size=fit.history_size)
        keywords = {**parts.optimizer.keywords, "history_size": fit.history_size}  # type: ignore[attr-defined]
        parts = dataclasses.replace(parts, optimizer=functools.partial(parts.optimizer.func, **keywords))
    config = dataclasses.replace(config, engine=engine, optimizer=optimizer)
    return config, derive_images(config), parts


def _prepare_run(config: Config, run_dir: Path, checkpoint: Path | None, n_stages: int) -> None:
    for done in ("result.png", "metrics.json"):
        if (run_dir / done).exists():
            raise NSTError(f"{run_dir} already holds a {done}: pick another hydra.run.dir, nothing was overwritten")
    if checkpoint is not None and n_stages > 1:
        raise NSTError("resume of a coarse-to-fine run (scales=...) is not supported: rerun it, or resume one stage")


def run(
    config: Config,
    run_dir: str | Path,
    tensorboard_dir: str | Path | None = None,
    run_name: str | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[L.Callback] = (),
    parts: Parts | None = None,
) -> dict[str, Any]:
    """Run one style transfer into ``run_dir``; return the final metrics (also in run_dir/metrics.json).

    Logs go to run_dir/tensorboard, or, for a sweep, to tensorboard_dir/run_name. With ``resume=<run dir>`` the
    stopped run continues, with its own settings (``overrides`` may change the steps, snapshots and trainer), into
    ``run_dir``. With ``scales=[...]`` each stage but the last runs in run_dir/stages/<i>_<size>px, the next starting
    from its result upsampled. With ``batch_sweep`` each image has a subfolder, and run_dir/metrics.json lists them.
    ``callbacks`` are added to every stage's Trainer, after those of ``config.callbacks``; ``parts``: built already
    (a video's frames share them), else built here.
    """
    config, checkpoint, resumed_from = resume(config, list(overrides))
    images = validate_run(config)
    parts = build_parts(config) if parts is None or resumed_from is not None else parts
    check_layers(images, parts.network)
    plan = stages(config)
    config, images, parts = _fit_memory(config, images, parts)  # refused now if it cannot fit, not killed later
    tile = config.engine.tile if isinstance(config.engine.tile, int) else None
    world = distributed.check_devices(config.trainer, len(images), tile is not None)
    rank = ranks.launched_rank() if world > 1 else 0  # only rank 0 writes in the run folder
    interrupts.check()  # the safe points of start-up (see nst_lightning.util.interrupts)
    if slow := slow_precision_warning(config):
        log.warning(slow)
    run_dir = Path(run_dir)
    _prepare_run(config, run_dir, checkpoint, len(plan))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _record(config, run_dir)
    configure_device(config)
    L.seed_everything(config.seed, verbose=False)
    start, started, metrics, runs = None, time.perf_counter(), [], []
    for i, stage in enumerate(plan):
        final = i == len(plan) - 1
        folder = run_dir if final else run_dir / "stages" / f"{i}_{stage.size}px"
        interrupts.check()
        module = build_module(config, parts, stage, start, images)
        _spread(module, world, rank, tile)
        interrupts.check()
        if i == 0 and (tip := bf16_tip(config)):  # once the inputs have loaded: never ahead of an error about them
            log.info(tip)
        info: dict[str, Any] = {"content_scale": stage.content_scale}  # the paper's alpha times this was used
        if len(plan) > 1:
            info.update(stage=i, stages=[[s.size, s.steps] for s in plan])
        if resumed_from is not None:
            info["resumed_from"] = str(resumed_from)
        runs = image_runs(images, parts.logger, folder, tensorboard_dir if final else None, run_name, info, rank == 0)
        if rank == 0:
            check_outputs(runs, bool(config.snapshot_every))
        metrics = _fit(config, module, runs, folder, checkpoint, [*parts.callbacks, *callbacks], world)
        if metrics[0]["interrupted"]:
            break
        start = module.whole(module.objective.generated(module.image.detach())).cpu()  # the next stage's start
    return _summarise(plan, runs, metrics, run_dir, time.perf_counter() - started, rank == 0)


def _summarise(
    plan: list[Stage],
    runs: list[ImageRun],
    metrics: list[dict[str, Any]],
    run_dir: Path,
    seconds: float,
    writes: bool = True,
) -> dict[str, Any]:
    for m in metrics if len(plan) > 1 else []:
        m["seconds_all_stages"] = seconds
    if len(metrics) == 1:
        if len(plan) > 1 and writes:
            write_json(metrics[0], Path(runs[0].folder) / "metrics.json")
        log.info("result: %s", runs[0].folder / "result.png")
        return metrics[0]
    summary = {
        "batch": {run.folder.name: m for run, m in zip(runs, metrics, strict=True)},
        "loss_total": min(m["loss_total"] for m in metrics),
        "interrupted": metrics[0]["interrupted"],
    }
    if writes:
        write_json(summary, run_dir / "metrics.json")
    log.info("results: %s", ", ".join(str(run.folder / "result.png") for run in runs))
    return summary
