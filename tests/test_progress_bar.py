"""The progress bar shows the losses of the last step without the module calling self.log for them."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from nst_lightning.callbacks import ProgressBar


def test_bar_reads_the_last_losses_of_the_first_image():
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={})
    module = SimpleNamespace(
        last_losses={"total": torch.tensor([3.0, 9.0]), "content": torch.tensor([1.0, 2.0]), "style/conv1_1": 5.0}
    )
    metrics = ProgressBar().get_metrics(trainer, module)
    assert metrics == {"loss/total": 3.0, "loss/content": 1.0}


def test_values_logged_by_the_module_win_and_no_losses_yet_is_fine():
    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={"loss/total": 7.0})
    module = SimpleNamespace(last_losses={"total": torch.tensor([3.0])})
    assert ProgressBar().get_metrics(trainer, module) == {"loss/total": 7.0}
    assert ProgressBar().get_metrics(SimpleNamespace(loggers=[], progress_bar_metrics={}), SimpleNamespace()) == {}
