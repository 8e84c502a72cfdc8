"""What leaves the optimisation's hot path: snapshots, the final result, metrics.json and HParams."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from nst_lightning.files import atomic_write
from nst_lightning.images import save_png
from nst_lightning.module import StyleTransfer

log = logging.getLogger(__name__)


def write_json(data: dict[str, Any], path: Path) -> None:
    """Atomic JSON write (temp file + rename)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


@dataclass
class ImageRun:
    """Where one generated image's results go (a batched sweep has one per image)."""

    folder: Path  # result.png, metrics.json, snapshots/
    logger: TensorBoardLogger  # its own TensorBoard run: losses, snapshots, HParams
    hparams: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # extra entries for metrics.json


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, showing step, losses and speed, without the meaningless logger version.

    The losses (the first image's) are read from the module's last step here, when the bar redraws, so the
    module needs no ``self.log`` for them: each ``self.log`` call costs about 1.5 ms of Python per step
    (Lightning moves its result collection to the device on every call), which a run without a bar should
    not pay (benchmarks/README.md, framework overhead).
    """

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        for key in ("total", "content", "style"):
            value = getattr(module, "last_losses", {}).get(key)
            if value is not None and f"loss/{key}" not in metrics:
                metrics[f"loss/{key}"] = float(value.detach().flatten()[0])
        return metrics


class LossCurves(L.Callback):
    """Every step, each image's losses (total, content, style and each style layer, ...) to its TensorBoard run."""

    def __init__(self, runs: list[ImageRun]) -> None:
        self.runs = runs

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransfer, *args: Any) -> None:
        losses = {key: value.detach().cpu() for key, value in module.last_losses.items()}
        for k, run in enumerate(self.runs):
            values = module.image_losses(losses, k)
            run.logger.log_metrics({f"loss/{key}": value for key, value in values.items()}, step=trainer.global_step)


class Snapshots(L.Callback):
    """Every ``every`` steps (and at step 0): a PNG in snapshots/ and the image in TensorBoard, per image."""

    def __init__(self, runs: list[ImageRun], every: int) -> None:
        self.runs, self.every = runs, every

    def _snapshot(self, module: StyleTransfer, step: int) -> None:
        images = module.result().cpu()
        for image, run in zip(images, self.runs, strict=True):
            save_png(image, run.folder / "snapshots" / f"step_{step:06d}.png")
            run.logger.experiment.add_image("image", image, step)

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        if self.every:
            self._snapshot(module, 0)

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransfer, *args: Any) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and step < module.steps:
            self._snapshot(module, step)


class GracefulStop(L.Callback):
    """The first Ctrl-C or SIGTERM (cluster pre-emption) ends the run after the current step, so the image
    and the optimiser state are consistent and the run can be resumed; a second Ctrl-C aborts at once."""

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
            trainer.should_stop = True
            log.warning("%s received: stopping after this step", signal.Signals(signum).name)

        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class FinalReport(L.Callback):
    """At the end, per image: result.png, metrics.json (losses of the final image) and HParams with final metrics.

    An interrupted run also leaves last.ckpt in ``checkpoint_dir`` (image + optimiser + loop state).
    """

    def __init__(self, runs: list[ImageRun], checkpoint_dir: Path, stop: GracefulStop) -> None:
        self.runs, self.checkpoint_dir, self.stop = runs, Path(checkpoint_dir), stop
        self.metrics: list[dict[str, Any]] = []

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        interrupted = self.stop.received is not None and trainer.global_step < module.steps
        if interrupted:  # to continue with resume=<this run dir>
            tmp = self.checkpoint_dir / ".last.ckpt.tmp"
            trainer.save_checkpoint(tmp)
            os.replace(tmp, self.checkpoint_dir / "last.ckpt")
        self._finish(trainer, module, interrupted=interrupted)

    def on_exception(self, trainer: L.Trainer, module: StyleTransfer, exception: BaseException) -> None:
        """A second Ctrl-C, or a signal outside our handler: keep the image reached so far (no checkpoint)."""
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            with torch.no_grad():
                broken = ~torch.isfinite(module.image).flatten(1).all(1)
                module.image[broken] = module.last_finite_image[broken]
            self._finish(trainer, module, interrupted=True)

    def _finish(self, trainer: L.Trainer, module: StyleTransfer, interrupted: bool = False) -> None:
        seconds = time.perf_counter() - getattr(self, "started", time.perf_counter())
        steps = trainer.global_step
        # One extra evaluation: the last step's loss was of the image before that step.
        final = {key: torch.tensor(values) for key, values in module.evaluate().items()}
        images = module.result().cpu()
        resumable = interrupted and (self.checkpoint_dir / "last.ckpt").is_file()
        self.metrics = []
        for k, run in enumerate(self.runs):
            losses = module.image_losses(final, k)
            diverged_at = module.diverged_at[k]
            metrics = {
                "loss_total": losses["total"],
                "loss_content": losses.get("content"),  # None: weighted 0, not computed
                "loss_style": losses.get("style"),
                "loss_style_layers": {key.split("/", 1)[1]: v for key, v in losses.items() if key.startswith("style/")},
                **{f"loss_{key}": losses[key] for key in ("tv", "color", "temporal") if key in losses},
                "steps": steps,
                "seconds": seconds,
                "seconds_per_step": seconds / max(steps, 1),
                "device": str(module.device),
                "size": list(images.shape[-2:]),
                "diverged": diverged_at is not None,
                "interrupted": interrupted,
                "resumable": resumable,
                "stopped_by": signal.Signals(self.stop.received).name if self.stop.received else None,
                **run.info,
            }
            if diverged_at is not None:
                metrics["diverged_at_step"] = diverged_at
            save_png(images[k], run.folder / "result.png")
            write_json(metrics, run.folder / "metrics.json")
            run.logger.experiment.add_image("result", images[k], steps)
            final_metrics = {f"final/loss_{key.replace('/', '_')}": value for key, value in losses.items()}
            final_metrics["final/seconds_per_step"] = metrics["seconds_per_step"]
            run.logger.log_hyperparams(run.hparams, final_metrics)
            run.logger.finalize("failed" if interrupted else "success")
            self.metrics.append(metrics)
