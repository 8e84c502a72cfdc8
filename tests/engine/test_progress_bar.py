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


def test_the_bar_counts_optimisation_steps_from_where_a_run_stands(images, tmp_path, monkeypatch):
    """A real run's bar reads "step 4/4" (not "Epoch 0: ... 4/4"), and a resumed one starts at its checkpoint."""
    import io

    from conftest import plan_of
    from tqdm import tqdm

    import nst_lightning.engine.run as engine_run

    shown = io.StringIO()

    class Bar(ProgressBar):
        def init_train_tqdm(self):
            return tqdm(total=0, file=shown, dynamic_ncols=False, ncols=200, mininterval=0)

    config = plan_of(
        f"content={images['content']}",
        f"style={images['style']}",
        "size=32",
        "steps=4",
        "snapshot_every=0",
        "metrics=false",
        "trainer.accelerator=cpu",
    )
    monkeypatch.setattr(engine_run, "ProgressBar", Bar)  # the run's own bar, writing where the test reads
    engine_run.run(config, tmp_path / "run")
    text = shown.getvalue().replace("\r", "\n")
    assert "step" in text and "4/4" in text and "Epoch" not in text
