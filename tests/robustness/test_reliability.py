"""Reliability: run folders are claimed before anything is written into them, sweeps carry
on past a job's own bad input, the memory check counts every image, and the rough edges of the command line
(seeds, Ctrl-C, unusable folders, unquoted special characters, pipes, file modes) give one line.

The new names (``nst_lightning.util.folders``, ``memory.Header``, ...) are imported inside the tests, so each test also
runs, and fails, against the code before these fixes.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_clean_error,
    cli,
    cli_in_process,
    error_lines,
    make_photo,
    memory_check,
    plan_of,
)
from PIL import Image

from nst_lightning.engine import memory
from nst_lightning.inputs.images import load_image, save_png
from nst_lightning.util.errors import NSTError

TINY = ["size=32", "steps=1", "snapshot_every=0", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _lines(output: str) -> list[str]:
    return error_lines(subprocess.CompletedProcess([], 0, output, ""))


# ------------------------------------------------------------------------------------------------------------------
# 2. A refused run or sweep leaves the folder's record as it was
# ------------------------------------------------------------------------------------------------------------------


def test_a_refused_run_leaves_the_record_of_the_run_it_refused(images, tmp_path):
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    record = {name: f"the earlier run's {name}\n" for name in ("config.yaml", "overrides.yaml", "hydra.yaml")}
    for name, text in record.items():
        (out / ".hydra" / name).write_text(text)
    (out / "result.png").write_bytes(b"earlier result")
    proc = cli_in_process(f"content={images['content']}", f"style={images['style']}", *TINY, f"hydra.run.dir={out}")
    assert_clean_error(proc, f"error: {out} already holds a result.png: pick another hydra.run.dir")
    assert {name: (out / ".hydra" / name).read_text() for name in record} == record  # resume= still reads them
    assert (out / "result.png").read_bytes() == b"earlier result"


def test_a_refused_sweep_leaves_the_sweep_as_it_was(images, tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("the earlier sweep\n")
    (sweep / "0" / ".hydra" / "config.yaml").write_text("job 0 of the earlier sweep\n")
    (sweep / "0" / "result.png").write_bytes(b"earlier result")
    args = [f"content={images['content']}", f"style={images['style']}", *TINY]
    proc = cli_in_process("-m", *args, "ratio=1e-3,1e-2", f"hydra.sweep.dir={sweep}")
    line = assert_clean_error(proc, f"error: {sweep} already holds a multirun.yaml")
    assert "pick another hydra.sweep.dir" in line and "hydra.run.dir" not in line
    assert (sweep / "multirun.yaml").read_text() == "the earlier sweep\n"
    assert (sweep / "0" / ".hydra" / "config.yaml").read_text() == "job 0 of the earlier sweep\n"
    assert not (sweep / "1").exists()


def test_an_interrupted_runs_snapshots_are_not_overwritten(images, tmp_path):
    """A run killed before it wrote result.png (SIGKILL, out of memory) still left its snapshots."""
    out = tmp_path / "run"
    (out / "snapshots").mkdir(parents=True)
    (out / "snapshots" / "step_000000.png").write_bytes(b"hours of work")
    proc = cli_in_process(f"content={images['content']}", f"style={images['style']}", *TINY, f"hydra.run.dir={out}")
    assert_clean_error(proc, f"error: {out} already holds a snapshots/ folder: pick another hydra.run.dir")
    assert (out / "snapshots" / "step_000000.png").read_bytes() == b"hours of work"
    assert not (out / ".hydra").exists()


# ------------------------------------------------------------------------------------------------------------------
# 3. One process per run folder
# ------------------------------------------------------------------------------------------------------------------


def test_two_concurrent_runs_into_one_folder_the_second_is_refused(images, tmp_path, processes):
    """Two real processes, one hydra.run.dir: the second exits 2 naming the folder and the first's process id,
    and writes nothing there; the first finishes with its own results."""
    out = tmp_path / "run"
    common = [f"content={images['content']}", f"style={images['style']}", "trainer.accelerator=cpu"]
    common += ["trainer.enable_progress_bar=false", "size=32", f"hydra.run.dir={out}"]
    first = processes.cli(*common, "steps=100000", "snapshot_every=1", cwd=tmp_path)
    try:
        _wait_for(out / "snapshots" / "step_000001.png", first)
        hydra_record = (out / ".hydra" / "config.yaml").read_text()
        second = cli(*common, "steps=2", "ratio=1", cwd=tmp_path)
        line = assert_clean_error(second, f"error: {out} is in use by process {first.pid}")
        assert "pick another hydra.run.dir" in line
        assert (out / ".hydra" / "config.yaml").read_text() == hydra_record
        assert first.poll() is None  # the first run was never disturbed
    finally:
        first.send_signal(signal.SIGINT)
        output = first.communicate(timeout=120)[0]
    assert first.returncode == 130, output[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["steps"] >= 1  # the first run's own results


def test_a_live_holder_is_named_and_a_killed_one_blocks_nothing(images, tmp_path, processes):
    from nst_lightning.util import folders

    out = tmp_path / "run"
    script = f"from nst_lightning.util import folders; folders.claim({str(out)!r}); print('held'); input()"
    holder = processes.start([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NSTError, match=rf"{out} is in use by process {holder.pid} "):
            folders.claim(out)
        args = [f"content={images['content']}", f"style={images['style']}", *TINY, f"hydra.run.dir={out}"]
        assert_clean_error(cli_in_process(*args), f"error: {out} is in use by process {holder.pid}")
        assert not (out / ".hydra").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        holder.wait(timeout=30)
    assert (out / folders.LOCK_NAME).is_file()
    assert folders.claim(out) is True  # the kernel dropped the dead process's lock
    assert folders.claim(out) is False  # held by this process already
    folders.release(out)


def test_default_folder_names_are_unique_per_process_and_sorted_by_time():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import nst_lightning.apps.sweeps  # noqa: F401  registers ${pid:}, as the entry point does
    from nst_lightning.config.schema import conf_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    for key, prefix in (("hydra.run.dir", "outputs/runs/"), ("hydra.sweep.dir", "outputs/multirun/")):
        folder = str(OmegaConf.select(cfg, key))
        assert folder.startswith(prefix + time.strftime("%Y-%m-")), folder
        assert folder.endswith(f"_{os.getpid()}"), folder  # <date_time>_<pid>


# ------------------------------------------------------------------------------------------------------------------
# 4. A sweep carries on past a job's own bad input
# ------------------------------------------------------------------------------------------------------------------


def test_a_sweep_carries_on_past_a_bad_job_and_says_so_at_the_end(images, tmp_path):
    good2 = make_photo(tmp_path / "photo2.png", seed=5)
    sweep = tmp_path / "sweep"
    contents = f"{images['content']},{tmp_path / 'missing.png'},{good2}"
    proc = cli_in_process("-m", f"content={contents}", f"style={images['style']}", *TINY, f"hydra.sweep.dir={sweep}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    assert (sweep / "0" / "result.png").is_file() and (sweep / "2" / "result.png").is_file()  # job 2 ran
    marker = (sweep / "1" / "failed").read_text()
    assert marker.startswith(f"error: content image '{tmp_path / 'missing.png'}' not found")
    assert not (sweep / "0" / "failed").exists() and not (sweep / "2" / "failed").exists()
    assert f"error: 1 of 3 jobs failed: {sweep / '1'}" in _lines(output)


def test_a_sweep_stops_at_once_on_an_error_every_job_would_hit(images, tmp_path):
    """The rule's other side (it held before the fix too): a bad key the sweep does not vary stops the sweep."""
    sweep = tmp_path / "sweep"
    args = [f"content={images['content']}", f"style={images['style']}", *TINY, "style_layers=[conv1_1,conv9_9]"]
    proc = cli_in_process("-m", *args, "ratio=1e-3,1e-2", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert "error: unknown style layer 'conv9_9'" in proc.stdout + proc.stderr
    assert not (sweep / "1").exists()  # job 1 never started


def test_which_errors_let_a_sweep_carry_on():
    from nst_lightning.apps.sweeps import job_specific

    swept = {"content": "/data/missing.png", "ratio": "-1"}
    assert job_specific("content image '/data/missing.png' not found: give ...", swept)
    assert job_specific("ratio=-1.0 is not valid: it must be a finite number >= 0", swept)
    assert not job_specific("unknown style layer 'conv9_9'; valid layers: conv1_1 ...", swept)
    assert not job_specific("content_mask=m.png has no white area", {"content": "a.png"})  # another key
    assert job_specific("unknown content layer 'conv9_9'", {"content_layer": "conv9_9"})  # this job's value
    assert not job_specific("seed=1 is not valid", {"ratio": "1"})  # numbers match only as a key


def test_the_sweep_summary_counts_jobs_and_tells_crashes_from_bad_input(tmp_path):
    from nst_lightning.apps.sweeps import record_failure, sweep_summary

    for job in ("0", "1", "2"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "hydra.yaml").write_text("{}\n")
    (tmp_path / "0" / "ratio=0.1" / ".hydra").mkdir(parents=True)  # a batched sweep's image: not a job
    assert sweep_summary(tmp_path) is None
    record_failure(tmp_path / "1", "error: content image 'x' not found")
    assert sweep_summary(tmp_path) == (f"1 of 3 jobs failed: {tmp_path / '1'}", 2)
    record_failure(tmp_path / "2", "RuntimeError: boom\n\nTraceback ...")
    assert sweep_summary(tmp_path) == (f"2 of 3 jobs failed: {tmp_path / '1'}, {tmp_path / '2'}", 1)


# ------------------------------------------------------------------------------------------------------------------
# 5. The memory check counts every image, each at its own size
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def panorama(tmp_path) -> Path:
    path = tmp_path / "panorama.png"
    Image.new("RGB", (4000, 8), (90, 120, 200)).save(path)
    return path


def test_the_style_image_at_its_own_size_is_counted(images, panorama, monkeypatch):
    """The reported case: a 4000x8 panorama at size=8000 was killed at 24 GB; the check passed it, because it
    looked at the 8000x16 output only, not at the 8000x8000 style image."""
    monkeypatch.setattr(memory, "available_bytes", lambda device: 24 * 2**30)
    monkeypatch.delenv("NST_SKIP_MEMORY_CHECK", raising=False)
    cfg = plan_of(
        f"content={panorama}", f"style={images['style']}", "size=8000", "trainer.accelerator=cpu", "engine.tile=null"
    )
    with pytest.raises(NSTError) as info:
        memory_check(cfg)
    message = str(info.value)
    assert message.startswith("size=8000 needs about ") and "the style image at 8000x8000 px" in message
    fits = int(message.split("lower size (about ")[1].split(" px fits")[0])
    assert 1000 < fits < 8000
    base = [f"content={panorama}", f"style={images['style']}", "trainer.accelerator=cpu", "engine.tile=null"]
    memory_check(plan_of(*base, f"size={fits}"))  # the advice fits
    scale = float(message.split("lower style_scale (about ")[1].split(" fits")[0])
    memory_check(plan_of(*base, "size=8000", f"style_scale={scale}"))


@pytest.mark.parametrize(("option", "advice"), [("style_scale=100", "style_scale"), ("style_size=30000", "style_size")])
def test_a_style_larger_than_the_output_is_counted(images, monkeypatch, option, advice):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 2**30)
    monkeypatch.delenv("NST_SKIP_MEMORY_CHECK", raising=False)
    cfg = plan_of(f"content={images['content']}", f"style={images['style']}", option, "trainer.accelerator=cpu")
    with pytest.raises(NSTError, match=rf"larger than the 256x213 output\) .*: lower {advice} \(about "):
        memory_check(cfg)


def test_every_input_image_adds_to_the_estimate(images, tmp_path, monkeypatch):
    monkeypatch.delenv("NST_SKIP_MEMORY_CHECK", raising=False)
    base = [f"content={images['content']}", f"style={images['style']}", "size=512", "trainer.accelerator=cpu"]
    plain = memory_check(plan_of(*base))
    mask = tmp_path / "mask.png"
    Image.new("L", (48, 40), 255).save(mask)
    assert memory_check(plan_of(*base, f"content_mask={mask}")) > plain
    assert memory_check(plan_of(*base, "style_scale=2")) > plain
    two = memory_check(plan_of(*base[:1], f"style=[{images['style']},{images['style']}]", *base[2:]))
    assert two > plain


def test_decoded_pixels_follow_pils_reduced_jpeg_decoding():
    from nst_lightning.engine.memory import Header, decoded_pixels

    assert decoded_pixels(Header(8000, 8000, jpeg=True), 1000) == 1000 * 1000  # 1/8 scale
    assert decoded_pixels(Header(8000, 6000, jpeg=True), 1000) == 2000 * 1500  # 1/4: the box is 1000 x 1000
    assert decoded_pixels(Header(8000, 6000, jpeg=True), 2000) == 4000 * 3000  # 1/2: 1/4 would be < 2000 tall
    assert decoded_pixels(Header(8000, 6000, jpeg=False), 1000) == 8000 * 6000  # a PNG is decoded in full
    assert decoded_pixels(Header(4000, 8, jpeg=True), 8000) == 4000 * 8


def test_a_large_jpeg_is_decoded_at_the_scale_the_estimate_assumes(tmp_path):
    from nst_lightning.engine.memory import decoded_pixels, image_header

    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (10, 20, 30)).save(path, quality=50)
    header = image_header(path)
    assert (header.width, header.height, header.jpeg) == (1600, 1200, True)
    img = Image.open(path)
    img.draft("RGB", (300, 300))
    assert img.size[0] * img.size[1] == decoded_pixels(header, 300)


# ------------------------------------------------------------------------------------------------------------------
# 8-13. One line for the rough edges of the command line
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("seed=-1", "error: seed=-1 is not valid: a seed is a whole number from 0 to 4294967295"),
        ("seed=4294967296", "error: seed=4294967296 is not valid"),
        ("batch_sweep.seed=[0,-5]", "error: batch_sweep.seed=-5 is not valid"),
    ],
)
def test_a_seed_out_of_range_is_one_line(images, tmp_path, option, message):
    args = [f"content={images['content']}", f"style={images['style']}", *TINY, option]
    proc = cli_in_process(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_clean_error(proc, message)


def test_ctrl_c_while_starting_up_is_one_line(images, tmp_path, monkeypatch):
    import nst_lightning.engine.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C came while the weights were decoded

    monkeypatch.setattr(nst_lightning.engine.run, "run", interrupted)
    out = tmp_path / "run"
    try:
        proc = cli_in_process(f"content={images['content']}", f"style={images['style']}", *TINY, f"hydra.run.dir={out}")
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped the entry point (a traceback)")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 130 and "Traceback" not in output
    expected = f"interrupted before the first step: no image to keep (the run folder {out} holds only its logs)"
    assert _lines(output) == [expected]


def test_ctrl_c_right_after_start_is_one_line_exit_130(images, tmp_path, processes):
    """A real SIGINT as soon as the job starts (Hydra has written .hydra/): torch, Lightning and the weights are
    still loading. Many steps: on a loaded machine a 1-step run could finish before the signal lands."""
    out = tmp_path / "run"
    args = [f"content={images['content']}", f"style={images['style']}", *TINY, "steps=100000", f"hydra.run.dir={out}"]
    proc = processes.cli(*args, cwd=tmp_path)
    _wait_for(out / ".hydra" / "overrides.yaml", proc)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    lines = _lines(output)
    assert len(lines) == 1 and lines[0].startswith("interrupted"), output[-3000:]


def test_a_second_ctrl_c_exits_130_and_says_what_was_kept(images, tmp_path, processes):
    """The second Ctrl-C is sent as soon as the run has logged the first (two signals that arrive before Python
    handles the first count as one), while the step in progress, a few tenths of a second at 256 px, goes on."""
    out = tmp_path / "run"
    args = [f"content={images['content']}", f"style={images['style']}", "size=256", "steps=100000", "snapshot_every=1"]
    args += ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"]
    proc = processes.cli(*args, cwd=tmp_path)
    lines: list[str] = []
    first_seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "SIGINT received" in line:
                first_seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _wait_for(out / "snapshots" / "step_000001.png", proc)
    proc.send_signal(signal.SIGINT)
    assert first_seen.wait(timeout=120), "".join(lines)[-3000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    output = "".join(lines)
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    last = _lines(output)[-1]
    assert last.startswith(f"interrupted: kept the image so far in {out / 'result.png'}"), output[-3000:]
    assert (out / "result.png").is_file()


@pytest.mark.parametrize("kind", ["proc", "file"])
def test_an_unusable_run_folder_is_one_line(images, tmp_path, kind):
    if kind == "file":
        folder = tmp_path / "a_file"
        folder.write_text("not a folder\n")
    else:
        folder = Path("/proc/nst_lightning_cannot_be_here")
    proc = cli_in_process(f"content={images['content']}", f"style={images['style']}", *TINY, f"hydra.run.dir={folder}")
    line = assert_clean_error(proc, f"error: hydra.run.dir={folder} cannot be used as a run folder")
    assert line.endswith("pick a folder you can write to")
    if kind == "file":
        assert folder.read_text() == "not a folder\n"


@pytest.mark.parametrize("name", ["café.png", "日本.png", "a=b.png", "x[1].png"])
def test_special_characters_get_the_quoting_rule(images, tmp_path, name):
    path = make_photo(tmp_path / name)
    proc = cli_in_process(f"content={path}", f"style={images['style']}", *TINY, f"hydra.run.dir={tmp_path / 'e'}")
    assert_clean_error(proc, f"""quotes, inside the shell's quotes: "content='{path}'\"""")
    assert not (tmp_path / "e").exists()
    ok = cli_in_process(f"content='{path}'", f"style={images['style']}", *TINY, f"hydra.run.dir={tmp_path / 'ok'}")
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]  # the advice works
    assert (tmp_path / "ok" / "result.png").is_file()


def test_the_quoting_rule_for_sweeps_and_lists():
    from nst_lightning.apps.cli import quoting_hint

    assert quoting_hint("content=café.png,b.png", multirun=True) == "content='café.png','b.png'"
    assert quoting_hint("style=[café.png,b.png]") == "style=['café.png','b.png']"
    assert quoting_hint("content=it's é.png") == 'content="it\'s é.png"'
    assert quoting_hint("ratio=[1,2") is None  # not a quoting problem: Hydra's own message


def test_a_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_image(str(fifo), 32, "content image")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():  # unblock the reader, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_image waited for a writer on a FIFO")
    assert isinstance(outcome[0], NSTError)
    assert f"content image '{fifo}' is not a regular file (a pipe" in str(outcome[0])
    read, write = os.pipe()  # what <(...) gives: /dev/fd/N
    try:
        with pytest.raises(NSTError, match="is not a regular file"):
            load_image(f"/dev/fd/{read}", 32, "style image")
        assert memory.image_header(f"/dev/fd/{read}") is None  # the memory check does not open it either
    finally:
        os.close(read)
        os.close(write)


# ------------------------------------------------------------------------------------------------------------------
# File modes, write_json, user_error
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, mask):
    previous = os.umask(mask)
    try:
        save_png(torch.rand(1, 3, 4, 5), tmp_path / "result.png")  # through files.atomic_write, as metrics.json
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "result.png").stat().st_mode) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "result.png"]  # no temp file left


def test_user_error_lives_in_errors_and_write_json_in_files(tmp_path, capsys):
    from nst_lightning.util.errors import user_error
    from nst_lightning.util.files import atomic_write, current_umask, write_json

    with pytest.raises(SystemExit) as info:
        user_error(NSTError("something to fix"), plain=True)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: something to fix\n"
    write_json({"b": 1, "a": [1.5]}, tmp_path / "metrics.json")
    assert (tmp_path / "metrics.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~current_umask()
    target = tmp_path / "m.json"
    atomic_write(target, lambda f: f.write(b"previous"))
    with pytest.raises(TypeError):
        write_json({"not json": object()}, target)
    assert target.read_bytes() == b"previous"  # a failed write keeps the previous file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "metrics.json"]
    video = (Path(__file__).parents[2] / "nst_lightning" / "apps" / "video.py").read_text()
    assert "from nst_lightning.apps.cli" not in video
