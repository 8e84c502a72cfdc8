"""What leaves the optimisation's hot path: snapshots, the final result, metrics.json and HParams."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from nst_lightning.engine.loggers import log_final, log_image
from nst_lightning.engine.module import StyleTransfer
from nst_lightning.engine.outputs import ImageRun
from nst_lightning.inputs.images import save_png
from nst_lightning.util import interrupts
from nst_lightning.util.files import WriteError, write_json

log = logging.getLogger(__name__)


class ProgressBar(TQDMProgressBar):
    """Lightning's bar in optimisation steps ("step 105/300", a resumed run from where it stopped), showing the
    losses and speed, without the meaningless logger version.

    The losses (the first image's) are the last ones the LossCurves callback copied off the device, so the bar
    never makes the step wait for the device; the module calls no ``self.log``.
    """

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        for key, value in getattr(module, "last_logged", {}).items():
            metrics.setdefault(f"loss/{key}", value)
        return metrics

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.set_description("step", refresh=False)
        bar.reset(total=trainer.max_steps)
        bar.n = bar.initial = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, module))
            bar.refresh()


class LossCurves(L.Callback):
    """Every step's losses of each image (total, content, style and each style layer, ...) to its TensorBoard run.

    The module writes them into a device buffer of ``log_every`` rows; every ``log_every`` steps this copies the
    buffer to the host without waiting (pinned memory on CUDA), and logs the previous copy, which is complete by
    then. At the end, and before the progress bar needs them, the rest. All images diverged: the run stops here.
    """

    def __init__(self, runs: list[ImageRun]) -> None:
        self.runs = runs
        self.pending: tuple[Tensor, Any, int, int] | None = None  # host copy, event, first step, rows

    def _copy(self, module: StyleTransfer, first: int, rows: int) -> None:
        log = module.whole(module.loss_log, 2)  # (rows, terms, K): every image's, from every rank
        pinned = log.device.type == "cuda"
        host = torch.empty(log.shape, dtype=log.dtype, pin_memory=pinned)
        host.copy_(log, non_blocking=pinned)
        event = None
        if pinned:
            event = torch.cuda.Event()
            event.record()
        self.pending = (host, event, first, rows)

    def _write(self, module: StyleTransfer) -> None:
        if self.pending is None:
            return
        host, event, first, rows = self.pending
        self.pending = None
        if event is not None:
            event.synchronize()
        n = host.shape[0]
        names = module.objective.terms_order
        for step in range(first, first + rows):
            row = host[step % n]  # (T, K)
            terms = dict(zip(names, row, strict=True))
            for k, run in enumerate(self.runs):
                values = module.image_losses(terms, k)
                run.logger.log_metrics({f"loss/{key}": value for key, value in values.items()}, step=step)
            module.last_logged = {key: float(terms[key][0]) for key in ("total", "content", "style") if key in terms}

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        self.flushed = trainer.global_step  # a resumed run logs from where it stopped

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransfer, *args: Any) -> None:
        step = trainer.global_step
        if step - self.flushed >= module.engine.log_every:
            self._write(module)
            self._copy(module, self.flushed, step - self.flushed)
            self.flushed = step
            if not bool(module.whole(module.active).any()):  # one host read per log_every steps
                trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        self._write(module)
        step = trainer.global_step
        if step > self.flushed:
            self._copy(module, self.flushed, step - self.flushed)
            self._write(module)
            self.flushed = step


class Snapshots(L.Callback):
    """Every ``every`` steps (and at step 0): a PNG in snapshots/ and the image in TensorBoard, per image."""

    def __init__(self, runs: list[ImageRun], every: int) -> None:
        self.runs, self.every = runs, every

    def _snapshot(self, trainer: L.Trainer, module: StyleTransfer, step: int) -> None:
        images = module.whole(module.result()).cpu()
        for image, run in zip(images, self.runs, strict=True) if trainer.is_global_zero else ():
            save_png(image, run.folder / "snapshots" / f"step_{step:06d}.png")
            log_image(run.logger, "image", image, step)

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        if self.every:
            self._snapshot(trainer, module, 0)

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransfer, *args: Any) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and step < module.steps:
            self._snapshot(trainer, module, step)


class GracefulStop(L.Callback):
    """The first Ctrl-C or SIGTERM (cluster pre-emption) ends the run after the current step, so the image
    and the optimiser state are consistent and the run can be resumed; a second Ctrl-C aborts at once.

    One that came before (recorded by nst_lightning.util.interrupts while the Trainer started) stops the run before
    its first step. On several devices the ranks agree at the start and after every step (the largest signal
    number any rank received), so a signal to one rank stops all of them after the same step: a rank that stopped
    alone would leave the others waiting in the next step's exchange."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def handler(signum: int, frame: Any) -> None:
            if self.received is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.received = signum
            if trainer.world_size == 1:  # several: the ranks agree after the step (_agree)
                trainer.should_stop = True
            log.warning("%s received: stopping after this step", signal.Signals(signum).name)

        for sig in self.SIGNALS:
            # signal.signal first runs a signal still pending in the interpreter through the old handler: the
            # recorder, which records it for take() below
            self._previous[sig] = signal.signal(sig, handler)
        if (early := interrupts.take()) is not None:
            self.received = early
            trainer.should_stop = True
        self._agree(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._agree(trainer)

    def _agree(self, trainer: L.Trainer) -> None:
        if trainer.world_size == 1:
            return
        mine = torch.tensor(self.received or 0, device=trainer.strategy.root_device)
        signum = int(trainer.strategy.reduce(mine, reduce_op="max"))
        if signum:
            self.received = signum
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def save_checkpoint(trainer: L.Trainer, folder: Path) -> None:
    """last.ckpt (image, optimiser, divergence record, step), written atomically (the Trainer's checkpoint_io is
    engine.checkpoint_io.AtomicCheckpointIO): a reader or a crash sees the previous checkpoint or this one, never
    half of one. files.WriteError if it cannot be written (the previous one is kept). Every rank calls it; rank 0
    writes the whole batch (StyleTransfer.on_save_checkpoint)."""
    try:
        trainer.save_checkpoint(folder / "last.ckpt", weights_only=False)  # the optimiser state too: resume continues
    except WriteError:
        trainer.strategy.barrier("Trainer.save_checkpoint")  # where the other ranks wait once it is written
        raise


def _kept_checkpoint(folder: Path) -> str:
    """What a failed checkpoint leaves to resume from: the step of the previous last.ckpt, if any."""
    try:
        step = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    except Exception:  # none, or unreadable
        return "no checkpoint is kept"
    return f"the previous last.ckpt (step {step}) is kept"


class PeriodicCheckpoint(L.Callback):
    """last.ckpt every ``every`` steps (0: not by steps) and whenever ``minutes`` have passed since the last one, so
    that a hard kill (SIGKILL, power loss) loses at most that much; ``resume=<run dir>`` continues from it. By time,
    because a step costs milliseconds on a GPU and seconds on a CPU while the history written costs the same."""

    def __init__(self, folder: Path, every: int, minutes: float) -> None:
        self.folder, self.every, self.seconds = Path(folder), every, minutes * 60

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        self.last = time.monotonic()
        self.failing = False

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransfer, *args: Any) -> None:
        step = trainer.global_step
        late = bool(self.seconds) and time.monotonic() - self.last >= self.seconds
        if self.seconds and trainer.world_size > 1:  # each rank has its own clock: all write when any is due
            late = trainer.strategy.reduce_boolean_decision(late, all=False)
        due = (self.every and step % self.every == 0) or late
        if due and step < module.steps:
            try:
                save_checkpoint(trainer, self.folder)
            except WriteError as exc:  # a full disk: the run itself can go on, and the last one is still whole
                if not self.failing:  # once until a checkpoint is written again, not at every step
                    log.warning(
                        "checkpoint at step %d not written: %s; %s; the run goes on",
                        step,
                        exc,
                        _kept_checkpoint(self.folder),
                    )
                self.failing = True
            else:
                if self.failing:
                    log.info("checkpoint written again at step %d", step)
                self.failing = False
            self.last = time.monotonic()


class FinalReport(L.Callback):
    """At the end, per image: result.png, metrics.json (losses of the final image) and HParams with final metrics.

    An interrupted run leaves last.ckpt in ``checkpoint_dir`` (image + optimiser + loop state); a finished one
    removes the periodic one.
    """

    def __init__(
        self,
        runs: list[ImageRun],
        checkpoint_dir: Path,
        stop: GracefulStop,
        panel: Callable[[Tensor], list[dict[str, float]]] | None = None,
    ) -> None:
        self.runs, self.checkpoint_dir, self.stop, self.panel = runs, Path(checkpoint_dir), stop, panel
        self.metrics: list[dict[str, Any]] = []

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        self.started = time.perf_counter()
        self.first_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        interrupted = self.stop.received is not None and trainer.global_step < module.steps
        if interrupted and trainer.global_step == 0:
            return  # stopped before the first step of a new run: no image to keep (the entry point says so)
        if interrupted:  # to continue with resume=<this run dir>
            try:
                save_checkpoint(trainer, self.checkpoint_dir)
            except WriteError as exc:  # the image so far is still worth keeping: write it below
                log.warning(
                    "checkpoint at step %d not written: %s; %s",
                    trainer.global_step,
                    exc,
                    _kept_checkpoint(self.checkpoint_dir),
                )
        self._finish(trainer, module, interrupted=interrupted)
        if not interrupted and trainer.is_global_zero:
            (self.checkpoint_dir / "last.ckpt").unlink(missing_ok=True)

    def on_exception(self, trainer: L.Trainer, module: StyleTransfer, exception: BaseException) -> None:
        """A second Ctrl-C, or a signal outside our handler: keep the image reached so far (no new checkpoint)."""
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            module.restore_broken()
            if trainer.world_size > 1:  # the other ranks may be gone: nothing gathered, rank 0 keeps its own images
                self._keep_own(trainer, module)
                return
            self._finish(trainer, module, interrupted=True)

    def _keep_own(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        if not trainer.is_global_zero:
            return
        runs = self.runs if module.share is None else self.runs[module.share.part]
        for image, run in zip(module.result().cpu(), runs, strict=True):
            save_png(image, run.folder / "result.png")

    def _finish(self, trainer: L.Trainer, module: StyleTransfer, interrupted: bool = False) -> None:
        seconds = time.perf_counter() - getattr(self, "started", time.perf_counter())
        steps = trainer.global_step
        ran = steps - getattr(self, "first_step", 0)
        # one extra evaluation: the last step's loss was of the image before that step
        final = {key: module.whole(value) for key, value in module.evaluate().items()}
        images = module.whole(module.result()).cpu()
        diverged_at = module.whole(module.diverged_at).tolist()
        resumable = interrupted and (self.checkpoint_dir / "last.ckpt").is_file()
        writes = trainer.is_global_zero  # on several devices, rank 0 writes every image
        for k, run in enumerate(self.runs if writes else []):  # first: a failure in the measures must not lose them
            save_png(images[k], run.folder / "result.png")
        module.release_optimiser()  # a checkpoint, if any, is written: the history is not needed any more
        panels = self.panel(images) if self.panel is not None and writes else [None] * len(self.runs)
        self.metrics = []
        for k, run in enumerate(self.runs):
            losses = module.image_losses(final, k)
            metrics = {
                "loss_total": losses["total"],
                "loss_content": losses.get("content"),  # None: weighted 0, not computed
                "loss_style": losses.get("style"),
                "loss_style_layers": {key.split("/", 1)[1]: v for key, v in losses.items() if key.startswith("style/")},
                **{f"loss_{key}": losses[key] for key in ("tv", "color", "temporal") if key in losses},
                "steps": steps,
                "seconds": seconds,
                "seconds_per_step": seconds / max(ran, 1),  # the steps run in this process
                "device": str(module.device),
                **({"devices": trainer.world_size} if trainer.world_size > 1 else {}),
                "size": list(images.shape[-2:]),
                "diverged": diverged_at[k] >= 0,
                "interrupted": interrupted,
                "resumable": resumable,
                "stopped_by": signal.Signals(self.stop.received).name if self.stop.received else None,
                **run.info,
            }
            if diverged_at[k] >= 0:
                metrics["diverged_at_step"] = diverged_at[k]
            if panels[k] is not None:
                metrics["metrics"] = panels[k]
            if writes:
                write_json(metrics, run.folder / "metrics.json")
            log_image(run.logger, "result", images[k], steps)
            final_metrics = {f"final/loss_{key.replace('/', '_')}": value for key, value in losses.items()}
            final_metrics["final/seconds_per_step"] = metrics["seconds_per_step"]
            final_metrics.update({f"metrics/{key}": value for key, value in (panels[k] or {}).items()})
            log_final(run.logger, run.hparams, final_metrics, steps)  # Lightning finalises the loggers after this
            self.metrics.append(metrics)
