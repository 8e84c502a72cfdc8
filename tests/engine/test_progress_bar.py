"""The progress bar shows the losses last copied off the device (LossCurves), without the module calling self.log."""

from __future__ import annotations

from types import SimpleNamespace

from nst_lightning.engine.callbacks import ProgressBar


def test_bar_reads_the_last_losses_copied_off_the_device():
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={})
    module = SimpleNamespace(last_logged={"total": 3.0, "content": 1.0})
    metrics = ProgressBar().get_metrics(trainer, module)
    assert metrics == {"loss/total": 3.0, "loss/content": 1.0}


def test_values_logged_by_the_module_win_and_no_losses_yet_is_fine():
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={"loss/total": 7.0})
    module = SimpleNamespace(last_logged={"total": 3.0})
    assert ProgressBar().get_metrics(trainer, module) == {"loss/total": 7.0}
    assert ProgressBar().get_metrics(SimpleNamespace(loggers=[], progress_bar_metrics={}), SimpleNamespace()) == {}
