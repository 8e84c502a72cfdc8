"""Real runs on 2 CPU processes (Lightning's ddp, gloo), through the command line as a user starts them: one image
in tiles and a batch give the one-process results; only rank 0 writes; Ctrl-C and SIGTERM stop both ranks with the
images kept; a run stopped on 2 processes resumes on 1; bad input is one line.

L-BFGS amplifies rounding: the order of the sums across ranks changes the last bits of a step, and from about the
8th step from a start the curves part by 1e-6 and more. So the curves are compared step by step where they are
still rounding apart, and the final losses with that growth allowed for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, cli, make_painting, make_photo, pixels
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

RATIOS = ("ratio=0.001", "ratio=0.01", "ratio=0.1")
BATCH = ["size=32", "steps=10", "batch_sweep.ratio=[1e-3,1e-2,1e-1]"]  # 3 images: shares of 2 and 1
TILED = ["size=48", "steps=10", "engine.tile=32", "init=content"]  # 48 x 40 px: 4 tiles of 32 px, 2 per rank
CPU = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "metrics=false"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("inputs")
    return [f"content={make_photo(folder / 'photo.png')}", f"style={make_painting(folder / 'painting.png')}"]


def _run(inputs: list[str], folder: Path | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A run that must succeed, into ``folder`` (None: Hydra's default run folder under ``cwd``)."""
    out = [f"hydra.run.dir={folder}"] if folder is not None else []
    proc = cli(*inputs, *CPU, *args, *out, cwd=cwd or folder.parent)  # type: ignore[union-attr]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def _resume(stopped: Path, folder: Path, devices: int) -> None:
    """Resume ``stopped`` into ``folder`` on ``devices`` processes: its own settings, only the device count new."""
    args = [f"resume={stopped}", *CPU[:2], f"trainer.devices={devices}", f"hydra.run.dir={folder}"]
    proc = cli(*args, cwd=folder.parent)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def _curve(folder: Path) -> list[float]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return [e.value for e in events.Scalars("loss/total")]


def _loss(folder: Path) -> float:
    return json.loads((folder / "metrics.json").read_text())["loss_total"]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(a)


@pytest.fixture(scope="module")
def one_process(inputs, tmp_path_factory) -> dict[str, Path]:
    """The reference runs on one process: the tiled image and the batch."""
    folder = tmp_path_factory.mktemp("one")
    _run(inputs, folder / "tiled", *TILED, "snapshot_every=0")
    _run(inputs, folder / "batch", *BATCH, "snapshot_every=0")
    return {"tiled": folder / "tiled", "batch": folder / "batch"}


def test_a_tiled_image_on_two_processes_follows_the_one_process_run(inputs, one_process, tmp_path):
    _run(inputs, tmp_path / "two", *TILED, "snapshot_every=0", "trainer.devices=2")
    one, two = one_process["tiled"], tmp_path / "two"
    a, b = _curve(one / "tensorboard"), _curve(two / "tensorboard")
    assert len(a) == len(b) == 10
    assert max(_rel(x, y) for x, y in zip(a[:7], b[:7], strict=True)) < 1e-6  # one trajectory, rounding apart
    assert _rel(_loss(one), _loss(two)) < 1e-4  # measured: 4e-6 after 10 steps
    assert np.abs(pixels(one / "result.png") - pixels(two / "result.png")).max() <= 2 / 255
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["steps"] == 10 and metrics["size"] == [40, 48]


def test_a_batch_on_two_processes_gives_each_image_its_one_process_result(inputs, one_process, tmp_path):
    work = tmp_path / "work"  # the default run folder (a date and rank 0's process id), as a user gets it
    work.mkdir()
    _run(inputs, None, *BATCH, "snapshot_every=5", "trainer.devices=2", cwd=work)
    folders = list((work / "outputs" / "runs").iterdir())
    assert len(folders) == 1 and sorted(p.name for p in work.rglob("*") if p.parent == work) == ["outputs"]
    two = folders[0]
    summary = json.loads((two / "metrics.json").read_text())
    assert sorted(summary["batch"]) == sorted(RATIOS)
    for name in RATIOS:
        one_image, two_image = one_process["batch"] / name, two / name
        assert _rel(_loss(one_image), _loss(two_image)) < 1e-4, name
        assert json.loads((two_image / "metrics.json").read_text())["devices"] == 2
        events = list((two / "tensorboard" / name).glob("events.out.tfevents.*"))
        assert len(events) == 1  # rank 0's logger alone
        a, b = _curve(one_process["batch"] / "tensorboard" / name), _curve(events[0])
        assert len(b) == 10 and max(_rel(x, y) for x, y in zip(a[:7], b[:7], strict=True)) < 1e-6
        snapshots = sorted(p.name for p in (two_image / "snapshots").iterdir())
        assert snapshots == ["step_000000.png", "step_000005.png"]  # rank 1's image written by rank 0 too
    assert not list(two.rglob("*train_ddp_process*")) and not (two / "lightning_logs").exists()
    log = (two / "nst_lightning.log").read_text()
    assert log.count("results: ") == 1  # rank 1 said nothing into the run folder


def _signal_after(inputs: list[str], folder: Path, snapshot: Path, sig: int, *args: str) -> tuple[int, str]:
    """Start a run on 2 processes, send ``sig`` to its process group (as Ctrl-C in a terminal does) once
    ``snapshot`` is written; its exit code and output once every process of the group has ended."""
    command = [sys.executable, "-m", "nst_lightning", *inputs, *CPU, *args, "snapshot_every=1"]
    command.append(f"hydra.run.dir={folder}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(
        command, cwd=folder.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not snapshot.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, sig)
        output = proc.communicate(timeout=120)[0]
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < deadline:  # rank 1 ends with rank 0
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "a rank outlived the run"
        return proc.returncode, output
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_both_processes_and_the_run_resumes_on_one(inputs, one_process, tmp_path):
    part = tmp_path / "part"
    code, output = _signal_after(
        inputs, part, part / "ratio=0.1" / "snapshots" / "step_000003.png", signal.SIGINT, *BATCH, "trainer.devices=2"
    )
    assert code == 130, output[-3000:]
    assert "Traceback" not in output and f"continue with resume={part}" in output
    assert (part / "last.ckpt").is_file()
    stopped = {name: json.loads((part / name / "metrics.json").read_text()) for name in RATIOS}
    assert all(m["interrupted"] and m["resumable"] and m["stopped_by"] == "SIGINT" for m in stopped.values())
    assert len({m["steps"] for m in stopped.values()}) == 1 and 3 <= stopped["ratio=0.1"]["steps"] < 10
    assert all((part / name / "result.png").is_file() for name in RATIOS)

    _resume(part, tmp_path / "resumed", 1)
    for name in RATIOS:
        metrics = json.loads((tmp_path / "resumed" / name / "metrics.json").read_text())
        assert metrics["steps"] == 10 and not metrics["interrupted"] and "devices" not in metrics
        assert _rel(_loss(one_process["batch"] / name), metrics["loss_total"]) < 1e-4, name


def test_sigterm_stops_a_tiled_run_on_two_processes_and_it_resumes_on_two(inputs, one_process, tmp_path):
    part = tmp_path / "part"
    code, output = _signal_after(
        inputs, part, part / "snapshots" / "step_000002.png", signal.SIGTERM, *TILED, "trainer.devices=2"
    )
    assert code == 143, output[-3000:]
    assert "Traceback" not in output
    metrics = json.loads((part / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["stopped_by"] == "SIGTERM" and 2 <= metrics["steps"] < 10
    assert (part / "last.ckpt").is_file() and (part / "result.png").is_file()

    _resume(part, tmp_path / "resumed", 2)
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["steps"] == 10 and resumed["devices"] == 2 and not resumed["interrupted"]
    assert _rel(_loss(one_process["tiled"]), resumed["loss_total"]) < 1e-4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["content=missing.png", "engine.tile=32"], "content image 'missing.png' not found"),
        (["size=32"], "one untiled image runs on one device, not 2: add engine.tile=<px>"),
        (["batch_sweep.ratio=[1e-3,1e-1]", "trainer.devices=3"], "a batch of 2 images cannot fill 3 devices"),
    ],
)
def test_bad_input_on_two_processes_is_one_line(inputs, tmp_path, args, message):
    proc = cli(*inputs, *CPU, "trainer.devices=2", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_clean_error(proc, message)
    assert not (tmp_path / "run" / "result.png").exists() and not (tmp_path / "run" / "metrics.json").exists()
