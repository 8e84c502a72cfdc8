"""What leaves the optimisation's hot path: snapshots, the final result, metrics.json and HParams."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
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


def _tensorboard(trainer: L.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, showing step, losses and speed, without the meaningless logger version."""

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        return metrics


class Snapshots(L.Callback):
    """Every ``every`` steps (and at step 0): a PNG in snapshots/ and the image in TensorBoard."""

    def __init__(self, folder: Path, every: int) -> None:
        self.folder, self.every = Path(folder), every

    def _snapshot(self, trainer: L.Trainer, module: StyleTransfer, step: int) -> None:
        save_png(module.image, self.folder / f"step_{step:06d}.png")
        tb = _tensorboard(trainer)
        if tb is not None:
            tb.experiment.add_image("image", module.image.detach()[0].clamp(0, 1).float().cpu(), step)

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        if self.every:
            self._snapshot(trainer, module, 0)

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleTransfer, *args: Any) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and step < module.steps:
            self._snapshot(trainer, module, step)


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
    """At the end: result.png, metrics.json (losses of the final image) and HParams with final metrics."""

    def __init__(self, run_dir: Path, hparams: dict[str, Any], info: dict[str, Any], stop: GracefulStop) -> None:
        self.run_dir, self.hparams, self.info, self.stop = Path(run_dir), hparams, info, stop
        self.metrics: dict[str, Any] = {}

    def on_train_start(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module: StyleTransfer) -> None:
        interrupted = self.stop.received is not None and trainer.global_step < module.steps
        if interrupted:  # image + optimiser + loop state, to continue with resume=<this run dir>
            tmp = self.run_dir / ".last.ckpt.tmp"
            trainer.save_checkpoint(tmp)
            os.replace(tmp, self.run_dir / "last.ckpt")
        self._finish(trainer, module, interrupted=interrupted)

    def on_exception(self, trainer: L.Trainer, module: StyleTransfer, exception: BaseException) -> None:
        """A second Ctrl-C, or a signal outside our handler: keep the image reached so far (no checkpoint)."""
        if isinstance(exception, KeyboardInterrupt | SIGTERMException):
            if not torch.isfinite(module.image).all():
                with torch.no_grad():
                    module.image.copy_(module.last_finite_image)
            self._finish(trainer, module, interrupted=True)

    def _finish(self, trainer: L.Trainer, module: StyleTransfer, interrupted: bool = False) -> None:
        seconds = time.perf_counter() - getattr(self, "started", time.perf_counter())
        steps = trainer.global_step
        final = module.evaluate()  # one extra evaluation: the last step's loss was of the image before it
        save_png(module.image, self.run_dir / "result.png")
        layer_losses = {k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("style/")}
        self.metrics = {
            "loss_total": final["total"],
            "loss_content": final.get("content"),  # None: weighted 0, not computed
            "loss_style": final.get("style"),
            "loss_style_layers": layer_losses,
            "steps": steps,
            "seconds": seconds,
            "seconds_per_step": seconds / max(steps, 1),
            "device": str(module.device),
            "size": list(module.image.shape[-2:]),
            "diverged": module.diverged_at is not None,
            "interrupted": interrupted,
            "resumable": (self.run_dir / "last.ckpt").is_file() and interrupted,
            "stopped_by": signal.Signals(self.stop.received).name if self.stop.received else None,
            **self.info,
        }
        if "tv" in final:
            self.metrics["loss_tv"] = final["tv"]
        if module.diverged_at is not None:
            self.metrics["diverged_at_step"] = module.diverged_at
        write_json(self.metrics, self.run_dir / "metrics.json")
        tb = _tensorboard(trainer)
        if tb is not None:
            tb.experiment.add_image("result", module.image.detach()[0].clamp(0, 1).float().cpu(), steps)
            final_metrics = {f"final/loss_{k.replace('/', '_')}": v for k, v in final.items()}
            final_metrics["final/seconds_per_step"] = self.metrics["seconds_per_step"]
            tb.log_hyperparams(self.hparams, final_metrics)
            tb.finalize("failed" if interrupted else "success")
