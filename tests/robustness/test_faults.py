"""Faults lose nothing: divergence keeps the last finite image, Ctrl-C/SIGTERM keep the image and a resumable
checkpoint, resume reaches the uninterrupted result, and no result is ever overwritten or half-written."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Processes, assert_clean_error, cli, cli_in_process, pixels
from PIL import Image

from nst_lightning.engine.run import build_module, run
from nst_lightning.inputs.images import load_image, save_png
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import atomic_write, write_json

# ------------------------------------------------------------------------------------------------------------------
# Divergence
# ------------------------------------------------------------------------------------------------------------------


def test_divergence_stops_and_keeps_the_last_finite_image(make_cfg, tmp_path, caplog):
    # The step never reads back from the device: divergence is seen, and the run stopped, at the next copy of the
    # losses off the device (every engine.log_every steps).
    # With max pooling the first update itself leaves infinite pixels (the loss before it was finite): that too
    # is a divergence, not a step silently undone at every step.
    cfg = make_cfg(
        "optimizer=adam", "optimizer.lr=1e30", "steps=10", "init=content", "engine.log_every=2", "network.pooling=max"
    )
    metrics = run(cfg, tmp_path / "run")
    assert metrics["diverged"] is True and metrics["diverged_at_step"] < 10
    assert metrics["steps"] <= metrics["diverged_at_step"] + 2 < 10  # stopped early
    assert "non-finite at step" in caplog.text
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["diverged"] is True
    result = pixels(tmp_path / "run" / "result.png")
    content = build_module(make_cfg()).held.prepared.content[0].permute(1, 2, 0).numpy()
    assert np.abs(result - content).max() <= 1 / 255 + 1e-6  # the content start, the last finite image


def test_divergence_through_the_cli_says_so(images, tmp_path):
    out = tmp_path / "run"
    args = [f"content={images['content']}", f"style={images['style']}", "size=32", "steps=10", "init=content"]
    args += ["optimizer=adam", "optimizer.lr=1e30", "snapshot_every=0", "trainer.enable_progress_bar=false"]
    proc = cli_in_process(*args, "trainer.accelerator=cpu", f"hydra.run.dir={out}")
    assert proc.returncode == 0  # a diverged run still ends with a result (a sweep goes on)
    assert "the loss became non-finite at step" in proc.stdout + proc.stderr
    assert "kept the last finite image" in proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["diverged"] is True and np.isfinite(metrics["loss_total"])
    assert np.isfinite(pixels(out / "result.png")).all()


# ------------------------------------------------------------------------------------------------------------------
# Interruption (Ctrl-C, SIGTERM) and resume
# ------------------------------------------------------------------------------------------------------------------


def run_then_signal(
    processes: Processes, args: list[str], out: Path, sig: int, after_step: int
) -> subprocess.CompletedProcess:
    """Start a CLI run into ``out`` (snapshots every step), send ``sig`` once step ``after_step`` is done."""
    proc = processes.cli(*args, "snapshot_every=1", f"hydra.run.dir={out}", cwd=out.parent)
    deadline = time.monotonic() + 120
    while not (out / "snapshots" / f"step_{after_step:06d}.png").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-2000:]
        time.sleep(0.1)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    return subprocess.CompletedProcess(proc.args, proc.returncode, output, "")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_keeps_its_image(images, tmp_path, processes, sig, code):
    out = tmp_path / "run"
    args = [f"content={images['content']}", f"style={images['style']}", "size=32", "steps=100000"]
    proc = run_then_signal(processes, [*args, "trainer.enable_progress_bar=false"], out, sig, after_step=3)
    output = proc.stdout
    assert proc.returncode == code, output[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and 3 <= metrics["steps"] < 100000
    assert metrics["resumable"] is True and (out / "last.ckpt").is_file()
    assert metrics["stopped_by"] == sig.name
    assert "continue with resume=" in output
    assert np.isfinite(metrics["loss_total"])
    assert Image.open(out / "result.png").size == (32, 27)


def test_resume_continues_to_the_same_image(images, tmp_path, processes):
    """Interrupt a run with Ctrl-C, resume it: the final image equals an uninterrupted run's."""
    common = [f"content={images['content']}", f"style={images['style']}", "size=32", "steps=150"]
    common += ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    whole = cli(*common, "snapshot_every=0", f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]

    part = tmp_path / "part"
    run_then_signal(processes, common, part, signal.SIGINT, after_step=5)
    stopped_at = json.loads((part / "metrics.json").read_text())["steps"]
    assert 5 <= stopped_at < 150

    resumed = cli(f"resume={part}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert metrics["steps"] == 150 and metrics["interrupted"] is False
    a, b = pixels(tmp_path / "whole" / "result.png"), pixels(tmp_path / "resumed" / "result.png")
    assert np.abs(a - b).max() <= 2 / 255
    assert metrics["loss_total"] == pytest.approx(
        json.loads((tmp_path / "whole" / "metrics.json").read_text())["loss_total"], rel=1e-3
    )


def test_resume_needs_an_interrupted_run(images, tmp_path):
    proc = cli(f"resume={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not a run folder" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------------------------
# Never overwrite, always atomic
# ------------------------------------------------------------------------------------------------------------------


def test_never_overwrites_a_result(make_cfg, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.png").write_bytes(b"user's precious image")
    with pytest.raises(NSTError, match=r"already holds a result\.png"):
        run(make_cfg(), out)
    assert (out / "result.png").read_bytes() == b"user's precious image"


def test_cli_refuses_a_run_dir_that_holds_a_result(images, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.png").write_bytes(b"user's precious image")
    proc = cli_in_process(f"content={images['content']}", f"style={images['style']}", f"hydra.run.dir={out}")
    assert_clean_error(proc, f"error: {out} already holds a result.png: pick another hydra.run.dir")
    assert (out / "result.png").read_bytes() == b"user's precious image"


def test_save_png_round_trips_atomically(tmp_path):
    image = torch.rand((1, 3, 9, 13), generator=torch.Generator().manual_seed(0))
    out_dir = tmp_path / "out" / "nested"
    path = save_png(image, out_dir / "result.png")
    assert path == out_dir / "result.png"
    assert path.is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode == "RGB"
        assert img.size == (13, 9)
    loaded = load_image(str(path))
    assert (loaded - image).abs().max() <= 0.5 / 255 + 1e-6
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.png"]
    assert not list(out_dir.glob(".result-*"))


def test_save_png_failure_leaves_no_temp_file(tmp_path):
    target = tmp_path / "result.png"
    with pytest.raises(Exception):  # noqa: B017 - the error type is the tensor library's; only the cleanup matters
        save_png(torch.zeros(1, 5, 4, 4), target)  # five channels cannot be an RGB picture
    assert list(tmp_path.iterdir()) == []


def test_save_png_failure_keeps_previous_file(tmp_path):
    target = save_png(torch.full((1, 3, 2, 2), 0.5), tmp_path / "result.png")
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017
        save_png(torch.zeros(1, 5, 4, 4), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_a_failed_write_keeps_the_previous_metrics(tmp_path):
    """metrics.json, like every file a run writes, goes through a temp file: a crash mid-write keeps the old one."""
    target = tmp_path / "metrics.json"
    write_json({"steps": 1}, target)

    def crash_half_way(f):
        f.write(b'{"steps": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash_half_way)
    assert json.loads(target.read_text()) == {"steps": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
