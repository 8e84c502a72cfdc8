"""Shared fixtures and helpers: synthetic images (no third-party picture is needed), composed configs, the CLI
(in a subprocess and in this process), processes that end with their test, and a local HTTP server for
downloads."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image

from nst_lightning.apps.presets import register_configs
from nst_lightning.config.schema import conf_dir
from nst_lightning.inputs.builtin import PAINTINGS, brushstrokes

register_configs()


# ------------------------------------------------------------------------------------------------------------------
# Synthetic pictures
# ------------------------------------------------------------------------------------------------------------------


def make_photo(path: Path, width: int = 48, height: int = 40, seed: int = 0) -> Path:
    """A 'photograph': smooth sky gradient, a bright disc and a dark block, slightly noisy."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([0.3 + 0.5 * y, 0.5 + 0.3 * x, 0.9 - 0.4 * y], -1)
    img[(x - 0.6) ** 2 + (y - 0.3) ** 2 < 0.03] = (1.0, 0.9, 0.3)
    img[(x > 0.1) & (x < 0.35) & (y > 0.5)] = (0.15, 0.2, 0.1)
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def make_painting(path: Path, size: int = 48, seed: int = 1) -> Path:
    """A 'painting': bold diagonal stripes in two strong colours with a swirl."""
    y, x = np.mgrid[0:size, 0:size] / size
    phase = np.sin(2 * math.pi * (4 * (x + y) + 0.5 * np.sin(6 * x)))
    img = np.where(phase[..., None] > 0, (0.1, 0.2, 0.8), (1.0, 0.8, 0.1))
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def rgb_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_rgb(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array, mode="RGB").save(path)
    return path


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(width: int = 16, height: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb_array(width, height, seed=3), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def assert_batch(tensor: torch.Tensor, height: int, width: int) -> None:
    assert tensor.shape == (1, 3, height, width)
    assert tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0.0
    assert float(tensor.max()) <= 1.0


def assert_one_line_error(exc_info: pytest.ExceptionInfo, path: Path | str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    return {"content": make_photo(tmp_path / "photo.png"), "style": make_painting(tmp_path / "painting.png")}


# ------------------------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------------------------


def compose_cfg(*overrides: str):
    """The real conf/ composed with ``overrides`` (Hydra's compose API, as the CLI composes it)."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def plan_of(*overrides: str):
    """The typed plan of a run (``Config``) for the real conf/ composed with ``overrides``, as the CLI makes it."""
    return OmegaConf.to_object(compose_cfg(*overrides))


def checked(config):
    """The checks a run makes before its first image is decoded (the numbers, then the layers against the
    network); the images of the run."""
    from nst_lightning.config.validate import check_layers, validate_run
    from nst_lightning.engine.parts import build_parts

    found = validate_run(config)
    check_layers(found, build_parts(config).network)
    return found


def memory_check(config):
    """The up-front memory check of a run of ``config`` (its estimate, or None where it is not checked)."""
    from nst_lightning.config.validate import validate_run
    from nst_lightning.engine.memory import check_memory
    from nst_lightning.engine.parts import build_parts

    return check_memory(config, validate_run(config), build_parts(config))


TINY = ["size=32", "steps=3", "snapshot_every=0", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
TINY += ["metrics=false"]  # the end-of-run panel has its own tests (test_metrics.py, test_run.py)


@pytest.fixture
def make_cfg(images):
    """The plan (a typed ``Config``) of the real conf/ with overrides, on tiny synthetic images by default."""

    def _make(*overrides: str):
        return plan_of(f"content={images['content']}", f"style={images['style']}", *TINY, *overrides)

    return _make


@pytest.fixture
def make_dictconfig(images):
    """The composed config itself (Hydra's DictConfig), for what the entry points read."""

    def _make(*overrides: str):
        return compose_cfg(f"content={images['content']}", f"style={images['style']}", *TINY, *overrides)

    return _make


# ------------------------------------------------------------------------------------------------------------------
# Processes end with their test
# ------------------------------------------------------------------------------------------------------------------


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads (its children too: Hydra's launchers, data loader workers), then
    reap ``proc`` and close its pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def run_process(command: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` in a process group of its own, killed whole when
    the call returns or raises (a timeout, Ctrl-C in pytest): subprocess.run kills the child on a timeout, not the
    child's children."""
    kwargs.setdefault("text", True)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, proc.returncode, out, err)
    finally:
        _kill_group(proc)


class Processes:
    """The processes one test starts, each in a process group of its own; ``end`` (the fixture's teardown, pass or
    fail) kills every group, so nothing a test started runs on beside the rest of the suite."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, command: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(command, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def cli(self, *args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """``python -m nst_lightning *args`` started, output (stdout and stderr together) on ``proc.stdout``."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        kwargs.setdefault("text", True)
        return self.start([sys.executable, "-m", "nst_lightning", *args], cwd=cwd, env=cli_env(env), **kwargs)

    def end(self) -> None:
        for proc in self.started:
            _kill_group(proc)
        self.started.clear()


@pytest.fixture
def processes():
    """Start subprocesses through this (``processes.start``, ``processes.cli``): all are killed when the test ends."""
    started = Processes()
    try:
        yield started
    finally:
        started.end()


# ------------------------------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------------------------------


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: unbuffered output, HYDRA_FULL_ERROR unset unless in ``env``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env.update(env or {})
    return full_env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m nst_lightning *args`` in a subprocess, output captured; HYDRA_FULL_ERROR unset unless in ``env``."""
    return run_process([sys.executable, "-m", "nst_lightning", *args], cwd=cwd, env=cli_env(env), timeout=300)


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """The same Hydra entry point as ``cli``, called in this process: no interpreter and torch start-up, so a
    bad-input case takes well under a second instead of several. stdout/stderr are captured; the warnings a
    real run would print (not the deprecation warnings pytest turns on) are added to stderr."""
    import nst_lightning.engine.run  # noqa: F401  imported first, as in a real run: its warning filters are in place
    from nst_lightning.apps.cli import main

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_argv, full_error = sys.argv, os.environ.pop("HYDRA_FULL_ERROR", None)
    sys.argv, code = ["nst_lightning", *args], 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with warnings.catch_warnings(record=True) as caught:
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
                try:
                    main()
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            for w in caught:
                err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    finally:
        sys.argv = saved_argv
        if full_error is not None:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        for handler in root.handlers:  # Hydra's job logging: its console (our StringIO) and __main__.log
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(["nst_lightning", *args], code, out.getvalue(), err.getvalue())


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The non-empty lines a failed run printed (stdout and stderr), each without Hydra's log prefix."""
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return [line.split("] - ", 1)[1] if line.startswith("[") and "] - " in line else line for line in lines]


def assert_clean_error(proc: subprocess.CompletedProcess, message: str = "") -> str:
    """Bad input: exit code 2, exactly one line of output, ``error: <message ...>``, no traceback."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    lines = error_lines(proc)
    assert len(lines) == 1, output[-3000:]
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------------------------
# Downloads, against a local HTTP server
# ------------------------------------------------------------------------------------------------------------------


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    brushstrokes(32, seed=5).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 from a thread; yields (base_url, served folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def served_painting(server, monkeypatch):
    """starry_night served locally as a small JPEG, with PAINTINGS pinned to its sha256."""
    base_url, www, requests = server
    data = small_jpeg()
    (www / "starry_night.jpg").write_bytes(data)
    url, _ = PAINTINGS["starry_night"]
    monkeypatch.setitem(PAINTINGS, "starry_night", (url, hashlib.sha256(data).hexdigest()))
    return base_url, data, requests
