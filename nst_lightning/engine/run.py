"""One run, as a short list of steps: resume / plan / memory check, then for each stage build and fit, then
summarise. The config becomes a typed plan here, at the edge; nothing below reads it.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from nst_lightning.config.plan import RunPlan, Stage, build_plan, resume_config
from nst_lightning.engine.callbacks import (
    FinalReport,
    GracefulStop,
    LossCurves,
    PeriodicCheckpoint,
    ProgressBar,
    Snapshots,
)
from nst_lightning.engine.checkpoint_io import AtomicCheckpointIO
from nst_lightning.engine.memory import bf16_tip, check_memory, slow_precision_warning
from nst_lightning.engine.module import StyleTransfer
from nst_lightning.engine.outputs import ImageRun, check_outputs, image_runs
from nst_lightning.inputs.prepare import initial_image, prepare, resized_to
from nst_lightning.model.objective import Objective
from nst_lightning.model.vgg import build_network
from nst_lightning.util import interrupts
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import write_json

log = logging.getLogger(__name__)


def _not_an_advert(record: logging.LogRecord) -> bool:
    """Lightning prints a "💡 Tip" for its paid services at every Trainer: once per run and stage, not our users'
    concern."""
    return not str(record.msg).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)


def configure_device(plan: RunPlan) -> None:
    """CUDA: TF32 convolutions (fp32 sums) unless engine.tf32=false; cuDNN picks the fastest kernels for the
    run's fixed shapes. Matmuls stay fp32: L-BFGS's curvature products need the digits."""
    if torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = plan.engine.tf32
        torch.backends.cudnn.benchmark = True


def build_module(
    plan: RunPlan | DictConfig, stage: Stage | None = None, start: torch.Tensor | None = None
) -> StyleTransfer:
    """The module of one stage (default: the last); ``start`` (a coarser stage's result) replaces the starts."""
    if isinstance(plan, DictConfig):
        plan = build_plan(plan)
    stage = stage or plan.stages[-1]
    weights = [image.weights for image in plan.images]
    prepared = prepare(
        plan.inputs, stage.size, color=any(w.color for w in weights), temporal=any(w.temporal for w in weights)
    )
    net = plan.network
    network = build_network(
        str(net.arch),
        str(net.source),
        net.layers,
        str(net.pooling),
        net.seed,
        net.weights,
        net.channels_last,
        net.normalisation_floor,
    )
    objective = Objective(network, prepared, weights, stage.content_scale, plan.style_loss, plan.engine.precision)
    if start is not None:
        init = resized_to(start, prepared.content)
    else:
        init = torch.cat([initial_image(image, prepared) for image in plan.images])
    module = StyleTransfer(objective, init, weights, plan.optimizer, stage.steps, plan.engine, prepared.chroma)
    module.held.prepared = prepared
    return module


def _panel(module: StyleTransfer) -> Callable[[torch.Tensor], list[dict[str, float]]]:
    """The objective-independent measures of each final image against the run's own content and style(s)."""
    from nst_lightning.results.metrics import measure, metric_network  # torchmetrics: imported only when measuring

    prepared = module.held.prepared
    content = prepared.content if module.held.chroma is None else module.held.chroma  # the photo in colour

    def panel(images: torch.Tensor) -> list[dict[str, float]]:
        network = metric_network(module.device)
        return [measure(image[None], content, prepared.styles, prepared.blend, network) for image in images]

    return panel


def _fit(
    plan: RunPlan,
    module: StyleTransfer,
    runs: list[ImageRun],
    folder: Path,
    checkpoint: Path | None,
    extra: Sequence[L.Callback],
) -> list[dict[str, Any]]:
    """One Trainer.fit of ``module``; the metrics of each image."""
    stop = GracefulStop()
    report = FinalReport(runs, folder, stop=stop, panel=_panel(module) if plan.metrics else None)
    engine = plan.engine
    callbacks: list[L.Callback] = [LossCurves(runs), Snapshots(runs, engine.snapshot_every), stop]
    callbacks += [PeriodicCheckpoint(folder, engine.checkpoint_every, engine.checkpoint_minutes), report, *extra]
    trainer_args = dict(plan.trainer)
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
        log_every_n_steps=1,  # nothing is logged through Lightning; this only silences its data-size advice
        default_root_dir=str(folder),
        precision="32-true",  # the objective runs its own autocast (plan.engine.precision), capturable on CUDA
        plugins=[AtomicCheckpointIO(), *(trainer_args.pop("plugins", None) or [])],  # checkpoints in place
        **trainer_args,
    )
    with warnings.catch_warnings():
        # Lightning's advice for data-heavy training does not apply: our "dataset" is a step counter; and its own
        # use of a torch API that torch now deprecates is not the user's concern.
        for pattern in (".*does not have many workers.*", ".*smaller than the logging interval.*", ".*LeafSpec.*"):
            warnings.filterwarnings("ignore", message=pattern)
        interrupts.check()  # a signal while the Trainer was built; from fit on, GracefulStop takes it
        trainer.fit(module, ckpt_path=checkpoint, weights_only=True)  # a checkpoint is data, never code
    if not report.metrics:
        if stop.received is not None:  # it came while the Trainer started: nothing was optimised
            raise interrupts.Interrupted(stop.received)
        raise NSTError(f"the run stopped before its first step (steps={module.steps}): nothing was optimised")
    for image, step in zip(plan.images, module.diverged_at.tolist(), strict=True):
        if step >= 0:
            label = f"{image.name}: " if image.name else ""
            log.error("%sthe loss became non-finite at step %d: kept the last finite image", label, step)
    return report.metrics


def _record(cfg: DictConfig, run_dir: Path, resumed_from: Path | None) -> None:
    """The run folder records the settings the run used (Hydra's record is the command line's: for a resumed run,
    the defaults plus resume=), so that it can be resumed and reported in turn."""
    record = run_dir / ".hydra" / "config.yaml"
    if resumed_from is not None or not record.is_file():
        record.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, record)


def run(
    cfg: DictConfig,
    run_dir: str | Path,
    tensorboard_dir: str | Path | None = None,
    run_name: str | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[L.Callback] = (),
) -> dict[str, Any]:
    """Run one style transfer into ``run_dir``; return the final metrics (also in run_dir/metrics.json).

    TensorBoard events go to run_dir/tensorboard, or, for a sweep, to tensorboard_dir/run_name. With
    ``resume=<run dir>`` the stopped run continues, with its own settings (``overrides`` may change the steps,
    snapshots and trainer), into ``run_dir``. With ``scales=[...]`` each stage but the last runs in
    run_dir/stages/<i>_<size>px, the next starting from its result upsampled. With ``batch_sweep`` each image has
    a subfolder, and run_dir/metrics.json lists them. ``callbacks`` are added to every stage's Trainer.
    """
    cfg, checkpoint, resumed_from = resume_config(cfg, list(overrides))
    plan = build_plan(cfg)
    check_memory(plan)  # a run that cannot fit is refused now, with the estimate, not killed later
    interrupts.check()  # the safe points of start-up (see nst_lightning.util.interrupts)
    if slow := slow_precision_warning(plan):
        log.warning(slow)
    run_dir = Path(run_dir)
    for done in ("result.png", "metrics.json"):
        if (run_dir / done).exists():
            raise NSTError(f"{run_dir} already holds a {done}: pick another hydra.run.dir, nothing was overwritten")
    if checkpoint is not None and len(plan.stages) > 1:
        raise NSTError("resume of a coarse-to-fine run (scales=...) is not supported: rerun it, or resume one stage")
    run_dir.mkdir(parents=True, exist_ok=True)
    _record(cfg, run_dir, resumed_from)
    configure_device(plan)
    L.seed_everything(plan.seed, verbose=False)
    start, started, metrics = None, time.perf_counter(), []
    for i, stage in enumerate(plan.stages):
        final = i == len(plan.stages) - 1
        folder = run_dir if final else run_dir / "stages" / f"{i}_{stage.size}px"
        interrupts.check()
        module = build_module(plan, stage, start)
        interrupts.check()
        if i == 0 and (tip := bf16_tip(plan)):  # once the inputs have loaded: never ahead of an error about them
            log.info(tip)
        info: dict[str, Any] = {"content_scale": stage.content_scale}  # the paper's alpha times this was used
        if len(plan.stages) > 1:
            info.update(stage=i, stages=[[s.size, s.steps] for s in plan.stages])
        if resumed_from is not None:
            info["resumed_from"] = str(resumed_from)
        runs = image_runs(plan, folder, tensorboard_dir if final else None, run_name, info)
        check_outputs(runs, bool(plan.engine.snapshot_every))
        metrics = _fit(plan, module, runs, folder, checkpoint, callbacks)
        if metrics[0]["interrupted"]:
            break
        start = module.objective.generated(module.image.detach()).cpu()  # the next stage starts here, upsampled
    return _summarise(plan, runs, metrics, run_dir, time.perf_counter() - started)


def _summarise(
    plan: RunPlan, runs: list[ImageRun], metrics: list[dict[str, Any]], run_dir: Path, seconds: float
) -> dict[str, Any]:
    for m in metrics if len(plan.stages) > 1 else []:
        m["seconds_all_stages"] = seconds
    if len(metrics) == 1:
        if len(plan.stages) > 1:
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
