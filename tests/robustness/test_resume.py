"""Resume chains: a run stopped several times reaches the image of one uninterrupted run, each resumed folder
records the settings it ran with, only safe keys may change on resume, and a hard kill loses at most
engine.checkpoint_every steps."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import cli, pixels
from omegaconf import OmegaConf

from nst_lightning.engine.callbacks import GracefulStop
from nst_lightning.engine.run import run
from nst_lightning.util.errors import NSTError


class StopAt(L.Callback):
    """What a Ctrl-C at step ``step`` does: the graceful stop, after that step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if trainer.global_step == self.step:
            stop = next(cb for cb in trainer.callbacks if isinstance(cb, GracefulStop))
            stop.received = signal.SIGINT
            trainer.should_stop = True


def test_a_chain_of_three_interrupts_reaches_the_uninterrupted_image(make_cfg, tmp_path):
    settings = ["steps=9", "ratio=0.1", "batch_sweep.seed=[0,1]"]  # not the defaults: they must carry over
    whole = run(make_cfg(*settings), tmp_path / "whole")
    previous = None
    for i, stop in enumerate([2, 5, 7, None]):
        cfg = make_cfg(*settings) if previous is None else make_cfg(f"resume={previous}")
        callbacks = [StopAt(stop)] if stop else []
        metrics = run(
            cfg, tmp_path / f"part{i}", callbacks=callbacks, overrides=[f"resume={previous}"] * bool(previous)
        )
        assert metrics["interrupted"] is (stop is not None)
        if previous is not None:
            record = OmegaConf.load(tmp_path / f"part{i}" / ".hydra" / "config.yaml")
            assert record.steps == 9 and record.ratio == 0.1 and list(record.batch_sweep.seed) == [0, 1]
            assert record.resume is None
            first = json.loads((tmp_path / f"part{i}" / "seed=0" / "metrics.json").read_text())
            assert first["resumed_from"] == str(previous)
        previous = tmp_path / f"part{i}"
    for name in ("seed=0", "seed=1"):
        assert whole["batch"][name]["loss_total"] == pytest.approx(metrics["batch"][name]["loss_total"], rel=1e-5)
        difference = np.abs(pixels(tmp_path / "whole" / name / "result.png") - pixels(previous / name / "result.png"))
        assert difference.max() <= 1 / 255
    assert metrics["batch"]["seed=0"]["steps"] == 9
    assert not (previous / "last.ckpt").exists()  # a finished run leaves no checkpoint behind


def test_resume_honours_a_new_step_count_and_refuses_other_changes(make_cfg, tmp_path):
    run(make_cfg("steps=6"), tmp_path / "a", callbacks=[StopAt(2)])
    with pytest.raises(NSTError, match=r"ratio cannot change on resume \(only steps, snapshot_every"):
        run(make_cfg(f"resume={tmp_path / 'a'}", "ratio=0.5"), tmp_path / "b", overrides=["ratio=0.5"])
    assert not (tmp_path / "b").exists()
    metrics = run(make_cfg(f"resume={tmp_path / 'a'}", "steps=8"), tmp_path / "c", overrides=["steps=8"])
    assert metrics["steps"] == 8 and not metrics["interrupted"]
    assert OmegaConf.load(tmp_path / "c" / ".hydra" / "config.yaml").steps == 8
    assert metrics["seconds_per_step"] * 6 <= metrics["seconds"] * 1.01  # 6 steps ran in this process, not 8


def test_a_hard_kill_loses_at_most_checkpoint_every_steps(images, tmp_path, processes):
    out = tmp_path / "run"
    args = [f"content={images['content']}", f"style={images['style']}", "size=32", "steps=400"]
    args += ["engine.checkpoint_every=3", "snapshot_every=0", "trainer.enable_progress_bar=false"]
    args += ["trainer.accelerator=cpu", f"hydra.run.dir={out}"]
    proc = processes.cli(*args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "last.ckpt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "last.ckpt").is_file() and not (out / "result.png").exists()
    step = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert step > 0 and step % 3 == 0
    resumed = cli(f"resume={out}", f"steps={step + 3}", f"hydra.run.dir={tmp_path / 'on'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((tmp_path / "on" / "metrics.json").read_text())
    assert metrics["steps"] == step + 3 and metrics["resumed_from"] == str(out)


def test_checkpoints_come_by_time_too(make_cfg, tmp_path):
    seen = []

    class Look(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            seen.append((Path(trainer.default_root_dir) / "last.ckpt").is_file())

    run(make_cfg("steps=4", "engine.checkpoint_minutes=1e-6"), tmp_path / "run", callbacks=[Look()])
    assert seen[:3] == [True, True, True]  # written after every step, since every step takes longer than that
    assert not (tmp_path / "run" / "last.ckpt").exists()  # and gone once the run has finished
    seen.clear()
    run(make_cfg("steps=4", "engine.checkpoint_minutes=60"), tmp_path / "other", callbacks=[Look()])
    assert not any(seen)


def _as_version_1(record: dict) -> dict:
    """The record of the same settings as the version before the pluggable parts wrote it."""
    old = {k: v for k, v in record.items() if k not in ("logger", "callbacks", "extra_terms", "settings_version")}
    old["style_loss"] = {"name": "gram", **dict.fromkeys(("kernel", "bandwidth", "degree", "offset"))}
    old["style_loss"].update(dict.fromkeys(("max_positions", "n_projections", "max_patches", "patch_size")))
    network = {k: v for k, v in record["network"].items() if not k.startswith("_")}
    old["network"] = {**network, "seed": None}
    optimizer = {k: record["optimizer"][k] for k in ("history_size", "first_step", "max_step")}
    old["optimizer"] = {"name": "lbfgs", **optimizer}
    old["engine"] = {k: v for k, v in record["engine"].items() if k != "tile"}
    old["trainer"] = {k: v for k, v in record["trainer"].items() if k != "strategy"}
    return old


def _stopped_run(make_cfg, folder: Path, settings: list[str]) -> dict:
    run(make_cfg(*settings), folder, callbacks=[StopAt(2)])
    return OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "config.yaml"))


def test_a_record_of_the_earlier_settings_version_resumes_to_the_same_image(make_cfg, tmp_path):
    settings = ["steps=5", "ratio=0.1", "tv_weight=3"]
    record = _stopped_run(make_cfg, tmp_path / "new", settings)
    assert record["settings_version"] == 2 and record["style_loss"]["_target_"].endswith("statistics.Gram")
    old = tmp_path / "old"
    old.mkdir()
    for name in ("last.ckpt",):
        (old / name).write_bytes((tmp_path / "new" / name).read_bytes())
    (old / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(_as_version_1(record)), old / ".hydra" / "config.yaml")
    from_new = run(make_cfg(f"resume={tmp_path / 'new'}"), tmp_path / "a", overrides=[f"resume={tmp_path / 'new'}"])
    from_old = run(make_cfg(f"resume={old}"), tmp_path / "b", overrides=[f"resume={old}"])
    assert from_old["loss_total"] == pytest.approx(from_new["loss_total"], rel=1e-6) and from_old["steps"] == 5
    migrated = OmegaConf.load(tmp_path / "b" / ".hydra" / "config.yaml")
    assert migrated.settings_version == 2 and migrated.tv_weight == 3 and migrated.ratio == 0.1
    assert migrated.network._target_ == "nst_lightning.model.vgg.VGG" and migrated.network.seed == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("tv_weight"), r"its record lacks tv_weight \(settings version 2\)"),
        (lambda r: r.update(brightness=1.5), r"holds unknown brightness"),
        (lambda r: r.update(tv=r.pop("tv_weight")), r"lacks tv_weight and holds unknown tv"),  # a renamed key
        (lambda r: r["engine"].pop("log_every"), r"lacks engine.log_every"),
        (lambda r: r.update(settings_version=3), r"holds settings version 3; this nst-lightning reads versions 1 to 2"),
    ],
)
def test_a_record_that_would_change_the_settings_is_refused_naming_the_keys(make_cfg, tmp_path, change, message):
    record = _stopped_run(make_cfg, tmp_path / "a", ["steps=4"])
    change(record)
    OmegaConf.save(OmegaConf.create(record), tmp_path / "a" / ".hydra" / "config.yaml")
    with pytest.raises(NSTError, match=message) as info:
        run(make_cfg(f"resume={tmp_path / 'a'}"), tmp_path / "b", overrides=[f"resume={tmp_path / 'a'}"])
    assert "\n" not in str(info.value) and not (tmp_path / "b").exists()


def test_a_version_1_record_without_a_key_it_always_had_is_refused(make_cfg, tmp_path):
    """The issue's case: a record with no tv_weight once resumed with today's default, 250, and exited 0."""
    old = _as_version_1(_stopped_run(make_cfg, tmp_path / "a", ["steps=4", "tv_weight=0"]))
    del old["tv_weight"]
    OmegaConf.save(OmegaConf.create(old), tmp_path / "a" / ".hydra" / "config.yaml")
    with pytest.raises(NSTError, match=r"lacks tv_weight \(settings version 1\)"):
        run(make_cfg(f"resume={tmp_path / 'a'}"), tmp_path / "b", overrides=[f"resume={tmp_path / 'a'}"])
