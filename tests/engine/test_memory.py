"""The memory estimate and the up-front refusal of runs that cannot fit."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import memory_check, run_process

from nst_lightning.engine import memory
from nst_lightning.engine.memory import available_bytes, estimate_peak_bytes, memory_parts
from nst_lightning.engine.run import run
from nst_lightning.util.errors import NSTError

ROOT = Path(__file__).resolve().parents[2]


def size_dependent(side: int, **kwargs) -> int:
    """The estimate without the parts that do not grow with the image (process, network weights)."""
    parts = memory_parts(side, side, **kwargs)
    return sum(parts.values()) - parts["runtime"] - parts["weights"]


@pytest.mark.parametrize("side", [256, 512, 1024, 2048])
def test_estimate_grows_quadratically_with_size(side):
    ratio = size_dependent(2 * side) / size_dependent(side)
    assert 3.6 < ratio < 4.2  # pixels x4; the Gram matrices (N x N) do not grow
    assert estimate_peak_bytes(2 * side, 2 * side) > estimate_peak_bytes(side, side)


def test_estimate_parts_follow_the_settings():
    one, four = memory_parts(512, 512), memory_parts(512, 512, images=4)
    assert four["activations"] == 4 * one["activations"]
    assert four["optimizer"] == 4 * one["optimizer"]
    # L-BFGS keeps 2 x history_size vectors of the image's size, float32, from the first step on
    short, long = memory_parts(512, 512, history_size=2), memory_parts(512, 512, steps=2, history_size=100)
    assert long["optimizer"] - short["optimizer"] == 2 * (100 - 2) * 3 * 512 * 512 * 4
    assert memory_parts(512, 512, steps=300)["optimizer"] == long["optimizer"]
    assert memory_parts(512, 512, optimizer="adam")["optimizer"] < long["optimizer"]
    # bf16 halves the activations kept for backward (on a GPU, or a CPU with bf16 instructions; elsewhere the
    # float32 fallback keeps both copies); the Gram matrices stay float32
    gpu = memory_parts(512, 512, precision="bf16-mixed", device="cuda")
    assert gpu["activations"] == memory_parts(512, 512, device="cuda")["activations"] // 2
    assert gpu["gram"] == one["gram"]
    cpu = memory_parts(512, 512, precision="bf16-mixed")
    expected = one["activations"] // 2 if memory.native_bf16_cpu() else one["activations"] * 3 // 2
    assert cpu["activations"] == expected
    # a shallower network keeps fewer activations
    shallow = memory_parts(512, 512, layers=["conv2_2", "conv1_1", "conv2_1"])
    assert shallow["activations"] < one["activations"]


def test_available_memory_is_known_here():
    available = available_bytes("cpu")
    assert available is not None and available > 2**20


def test_normal_size_passes(make_cfg):
    cfg = make_cfg("size=256", "steps=300")
    needed = memory_check(cfg)
    assert needed is not None and 2**20 < needed < available_bytes("cpu")


def test_too_large_is_refused_with_the_estimate_and_what_fits(make_cfg, monkeypatch):
    cfg = make_cfg("size=1024", "steps=300", "engine.tile=null")
    w, h = 48, 40  # the synthetic photo's shape; the estimate follows the content's aspect ratio
    fits_1024 = estimate_peak_bytes(round(h * 1024 / w), 1024, steps=300)
    monkeypatch.setattr(memory, "available_bytes", lambda device: fits_1024 // 2)
    with pytest.raises(NSTError) as exc:
        memory_check(cfg)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("size=1024 needs about ")
    assert "GiB of memory is available" in message
    fits = int(message.split("lower size (about ")[1].split(" px fits")[0])
    assert 256 < fits < 1024
    assert estimate_peak_bytes(round(h * fits / w), fits, steps=300) <= fits_1024 // 2
    assert estimate_peak_bytes(round(h * (fits + 8) / w), fits + 8, steps=300) > fits_1024 // 2


def test_history_size_is_suggested_when_it_would_fit(make_cfg, monkeypatch):
    cfg = make_cfg("size=1024", "steps=300", "engine.tile=null")
    small_history = estimate_peak_bytes(round(40 * 1024 / 48), 1024, steps=300, history_size=20)
    monkeypatch.setattr(memory, "available_bytes", lambda device: small_history)
    with pytest.raises(NSTError, match=r"or optimizer.history_size=(19|20)\b"):
        memory_check(cfg)


def test_the_optimizer_part_covers_what_lbfgs_holds_after_one_step():
    from nst_lightning.optim.lbfgs import LBFGS

    image = torch.rand(2, 3, 12, 16, requires_grad=True)
    optimizer = LBFGS([image], history_size=7)

    def closure():
        optimizer.zero_grad()
        loss = image.square().sum((1, 2, 3))
        loss.sum().backward()
        return loss

    optimizer.step(closure)
    held = sum(v.numel() * v.element_size() for v in optimizer.state[image].values() if torch.is_tensor(v))
    estimate = memory_parts(12, 16, images=2, history_size=7, steps=1)["optimizer"]
    assert 2 * 2 * 7 * image[0].numel() * 4 <= held <= estimate


def test_the_style_loss_counts(make_cfg, monkeypatch):
    layers = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
    elements = sum(c * m for name, c, m in memory._feature_maps(64, 64, "conv5_1") if name in layers)
    parts = memory_parts(64, 64, style_loss="sliced_wasserstein")
    assert parts["style_loss"] == memory.STYLE_LOSS_BYTES["sliced_wasserstein"] * elements
    assert memory_parts(64, 64)["style_loss"] == 0  # gram: its own part
    gram = memory_check(make_cfg("size=256"))
    mmd = memory_check(make_cfg("size=256", "style_loss=mmd"))
    sliced = memory_check(make_cfg("size=256", "style_loss=sliced_wasserstein"))
    assert gram < mmd < sliced
    monkeypatch.setattr(memory, "available_bytes", lambda device: (gram + sliced) // 2)
    assert memory_check(make_cfg("size=256")) == gram
    with pytest.raises(NSTError, match=r"^size=256 needs about"):
        memory_check(make_cfg("size=256", "style_loss=sliced_wasserstein"))


def test_skip_switch(make_cfg, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    with pytest.raises(NSTError):
        memory_check(make_cfg())
    monkeypatch.setenv("NST_SKIP_MEMORY_CHECK", "1")
    assert memory_check(make_cfg()) is None


@pytest.mark.parametrize("native", [False, True])
def test_half_precision_on_a_cpu_without_bf16_is_flagged(make_cfg, monkeypatch, native):
    monkeypatch.setattr(memory, "native_bf16_cpu", lambda: native)
    warning = memory.slow_precision_warning(make_cfg("trainer.precision=bf16-mixed"))
    if native:
        assert warning is None
    else:
        assert warning.startswith("trainer.precision=bf16-mixed on a CPU without bf16 instructions")
        assert "\n" not in warning
    assert memory.slow_precision_warning(make_cfg("trainer.precision=32-true")) is None


def test_run_logs_the_half_precision_warning(make_cfg, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(memory, "native_bf16_cpu", lambda: False)
    with caplog.at_level("WARNING", logger="nst_lightning.engine.run"):
        run(make_cfg("trainer.precision=bf16-mixed", "steps=1"), tmp_path / "run")
    assert any("without bf16 instructions" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "run" / "result.png").is_file()


@pytest.mark.parametrize(
    ("flags", "overrides", "tipped"),
    [
        ({"amx_bf16", "avx512f"}, ["size=256"], True),
        ({"amx_bf16"}, ["size=512", "trainer.precision=32"], True),
        ({"avx512_bf16", "avx512f"}, ["size=256"], False),  # bf16 without AMX: not measured
        (set(), ["size=256"], False),
        ({"amx_bf16"}, ["size=128"], False),
        ({"amx_bf16"}, ["size=256", "trainer.precision=bf16-mixed"], False),
    ],
)
def test_bf16_tip_on_a_cpu_with_amx(make_cfg, monkeypatch, flags, overrides, tipped):
    monkeypatch.setattr(memory, "cpu_flags", lambda: flags)
    tip = memory.bf16_tip(make_cfg(*overrides))
    if tipped:
        assert tip.startswith("this CPU has AMX bf16 instructions: trainer.precision=bf16-mixed")
    else:
        assert tip is None


def test_run_logs_the_bf16_tip(make_cfg, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(memory, "cpu_flags", lambda: {"amx_bf16"})
    monkeypatch.setattr(memory, "BF16_TIP_MIN_SIZE", 32)
    with caplog.at_level("INFO", logger="nst_lightning.engine.run"):
        run(make_cfg("steps=1"), tmp_path / "run")
    assert sum("trainer.precision=bf16-mixed" in r.getMessage() for r in caplog.records) == 1


def test_huge_size_refused_through_the_cli_in_seconds(images, tmp_path):
    """size=20000 (about 1.5 TB) stops before any image is decoded or network built: one line, exit code 2."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "NST_SKIP_MEMORY_CHECK")}
    args = [f"content={images['content']}", f"style={images['style']}", "size=20000"]
    started = time.perf_counter()
    proc = run_process(
        [sys.executable, "-m", "nst_lightning", *args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env
    )
    seconds = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "error: size=20000 needs about " in lines[0]
    assert "GiB of memory is available: lower size (about " in lines[0]
    assert not (tmp_path / "run" / "result.png").exists()
    assert seconds < 120  # interpreter + torch start-up; the check itself takes milliseconds


CHECKPOINT_HIGH_WATER = """
import sys, torch
from nst_lightning.engine.checkpoint_io import AtomicCheckpointIO, serialised_size
def high_water():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) * 1024
state = {"history": torch.ones(64, 2**20)}  # 256 MiB, touched
before = high_water()
AtomicCheckpointIO().save_checkpoint(state, sys.argv[1])
print(high_water() - before, serialised_size(state))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the high-water mark from Linux's /proc")
def test_a_checkpoint_is_streamed_to_its_file_not_held_in_memory(tmp_path):
    """At 4096 px the L-BFGS history is 14 GiB: a checkpoint serialised in memory first would double it."""
    path = tmp_path / "last.ckpt"
    done = run_process([sys.executable, "-c", CHECKPOINT_HIGH_WATER, str(path)], timeout=120)
    assert done.returncode == 0, done.stderr
    grown, size = map(int, done.stdout.split())
    assert path.stat().st_size == size >= 256 * 2**20
    assert grown < 32 * 2**20  # the file's 256 MiB were never a copy in memory
    assert torch.load(path, weights_only=True)["history"].eq(1).all()
