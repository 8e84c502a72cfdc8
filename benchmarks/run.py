"""nst-lightning benchmarks: every comparison side by side in one process, reported as ratios.

    python benchmarks/run.py [--quick] [--only PART ...] [--out benchmarks/results.json] [--images DIR]
    python benchmarks/run.py --gpu [--quick] --out $OUT/gpu_results.json [--images DIR]

Each comparison alternates its contenders (A B A B ...) so that a slow minute of a busy machine hits them
alike, and reports medians and the ratio of medians. Results go to the terminal (a table), to a JSON file
and to a small plot next to it (results.png). Read top to bottom:

  0. settings, inputs, helpers (the step clock: a Lightning callback handed to ``run(callbacks=...)``)
  1. framework overhead: our Lightning run vs our objective and L-BFGS in a plain loop (plain_loop.py),
     and vs the network alone (forward + backward, no loss: the limit)
  2. standard: the usual PyTorch port of the paper (standard.py: torch.optim.LBFGS on the raw loss, 0-255
     pixels) vs ours on the paper's exact objective: loss after 100 and 300 steps, seconds per step (on a CPU
     in lockstep: one step of each in turn, in one run); the same from several starts (the seeds part)
  3. stall: white noise, a striped style, 64 px: how far each optimiser brings the loss in 100 steps
  4. mixed precision: trainer.precision=bf16-mixed vs 32-true
  5. peer: pastiche 1.6.0 (its CLI, as a subprocess) vs ours, same objective
  6. memory: peak RSS of fresh `python -m nst_lightning` processes vs nst_lightning.engine.memory's estimate
  7. product features: batched sweeps vs sequential runs, coarse-to-fine vs single scale (features.py)
  8. set-up: the import floor, a fresh process to its first step, a multirun's later jobs
  9. table, JSON, plot
  10. --gpu: the GPU numbers in one short run (about 4 minutes on an H100), each sub-part on its own time budget,
      the JSON rewritten after each measurement so that a timeout keeps what was measured

Timings exclude set-up: a run's seconds per step are the median of its step durations after its warm-up steps
(on CUDA from events recorded on the stream, so the step is never made to wait for the host). Every loss is
measured by our objective (nst_lightning.model.objective.Objective) in float32, on the images as optimised.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

import nst_lightning.engine.run as nst_run
from nst_lightning.config.plan import build_plan
from nst_lightning.config.schema import conf_dir, register_configs
from nst_lightning.engine.memory import cpu_flags, estimate_peak_bytes, native_bf16_cpu
from nst_lightning.inputs.images import load_image, save_png, white_noise
from nst_lightning.model.objective import Objective
from nst_lightning.model.vgg import build_vgg19

sys.path.insert(0, str(Path(__file__).resolve().parent))
import features  # this folder is not a package
from plain_loop import build_objective, network_only, objective_loss, plain_style_transfer, scaled_torch_lbfgs
from standard import PaperLoss, StandardRun, standard_style_transfer

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


# ------------------------------------------------------------------------------------------------------------------
# 0. Settings, inputs, helpers
# ------------------------------------------------------------------------------------------------------------------


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
    stall_styles: tuple[str, ...] = ("bw4", "redblue2")  # of STALL_STYLES; the first gives stall_fall
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
)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NATIVE_BF16 = DEVICE == "cuda" or native_bf16_cpu()


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
        "cpu_bf16_instructions": sorted({"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"} & cpu_flags()),
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


STALL_STYLES = {
    "bw4": "black and white vertical stripes, 4 px wide",
    "redblue2": "saturated red and blue vertical stripes, 2 px wide (tests/test_lbfgs.py's stall pattern)",
}


def stall_images(folder: Path, size: int, pattern: str = "bw4") -> tuple[Path, Path]:
    """The stall case's inputs, ``size`` px square: a smooth synthetic 'photo' (sky gradient, a disc) and a
    saturated high-contrast striped style (STALL_STYLES)."""
    y, x = np.mgrid[0:size, 0:size] / size
    photo = np.stack([0.3 + 0.5 * y, 0.5 + 0.3 * x, 0.9 - 0.4 * y], -1)
    photo[(x - 0.6) ** 2 + (y - 0.35) ** 2 < 0.04] = (1.0, 0.85, 0.2)
    column = np.arange(size)
    stripes = np.zeros((size, size, 3))
    if pattern == "bw4":
        stripes[:, (column // 4) % 2 == 0, :] = 1.0
    elif pattern == "redblue2":
        stripes[:, column % 4 < 2, 0] = 1.0
        stripes[:, column % 4 >= 2, 2] = 1.0
    else:
        raise ValueError(f"unknown stall style {pattern!r}: one of {', '.join(STALL_STYLES)}")
    content, style = folder / f"stall_photo_{size}.png", folder / f"stall_{pattern}_{size}.png"
    Image.fromarray((photo * 255).round().astype(np.uint8)).save(content)
    Image.fromarray((stripes * 255).astype(np.uint8)).save(style)
    return content, style


def make_cfg(
    content: Path, style: Path, size: int, steps: int, *overrides: str, recipe: str | None = "paper"
) -> DictConfig:
    """Our configuration as the CLI composes it, with the paper's recipe (recipe=None: the product's defaults) but
    our size balance and start; no snapshots and no progress bar."""
    base = [f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "snapshot_every=0"]
    if recipe is not None:  # the paper's layers, weights, pooling and ratio; the product's balance and start
        base += [f"recipe={recipe}", "reference_size=256", "init.scale=0.01"]
    base += ["trainer.enable_progress_bar=false", f"trainer.accelerator={'gpu' if DEVICE == 'cuda' else 'cpu'}"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=base + list(overrides))


def evaluator(cfg: DictConfig) -> Objective:
    """The float32 objective of ``cfg`` on the device: what every loss of a comparison is measured with."""
    return build_objective(build_plan(cfg), DEVICE, precision="32-true")[0]


# ---- the clock -----------------------------------------------------------------------------------------------

Timing = dict[str, float]  # {"wall": s, "cpu": s of this process's CPU time (all threads), "wall_mean": s}


@dataclass
class Stamp:
    wall: float  # time.perf_counter()
    cpu: float  # time.process_time()
    event: Any = None  # CUDA: an event recorded on the stream here (the device's time, without a host sync)


def now(sync: bool = False) -> Stamp:
    """A point in time. On CUDA an event on the current stream; ``sync`` also waits for the device first, so that
    ``wall`` is when the device got there (else it is when the host did)."""
    event = None
    if DEVICE == "cuda":
        if sync:
            torch.cuda.synchronize()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
    return Stamp(time.perf_counter(), time.process_time(), event)


def per_step(stamps: list[Stamp], warmup: int) -> Timing:
    """Seconds per step after ``warmup`` >= 1 steps (stamps: one per step end): the median of the step durations,
    so that a moment when another process takes the cores does not count (``wall_mean`` is the mean, which counts
    the periodic costs: loss logs, checkpoints). On CUDA the durations are the device's, between the events.

    Wall-clock time is what a user waits; CPU time is reported next to it because it is less sensitive to
    other processes competing for the cores (it still counts OpenMP threads waiting for each other)."""
    pairs = list(zip(stamps[warmup - 1 : -1], stamps[warmup:], strict=True))
    if not pairs:
        raise ValueError(f"{len(stamps)} steps stamped: none left after {warmup} warm-up steps")
    if stamps[-1].event is not None:
        stamps[-1].event.synchronize()
        wall = [a.event.elapsed_time(b.event) / 1000 for a, b in pairs]
    else:
        wall = [b.wall - a.wall for a, b in pairs]
    return {
        "wall": statistics.median(wall),
        "cpu": statistics.median(b.cpu - a.cpu for a, b in pairs),
        "wall_mean": statistics.fmean(wall),
    }


class StepClock(L.Callback):
    """Handed to ``engine.run.run(callbacks=[...])``: stamps the clock at the end of every step (Lightning's
    on_train_batch_end, after the step and after the product's own callbacks: loss logs, checkpoints), keeps the
    images after the steps in ``keep``, and records the modules and trainers it sees (one per stage).

    The first stamp waits for the device, so ``first_step`` (perf_counter) is when the first step was done."""

    def __init__(self, keep: Iterable[int] = ()) -> None:
        self.keep = set(keep)
        self.stamps: list[Stamp] = []
        self.images: dict[int, torch.Tensor] = {}  # step -> (K, 3, H, W) float32 on the CPU
        self.modules: list[L.LightningModule] = []
        self.trainers: list[L.Trainer] = []
        self.train_start: float | None = None
        self.first_step: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trainers.append(trainer)
        self.modules.append(pl_module)
        if self.train_start is None:
            self.train_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        first = not self.stamps
        self.stamps.append(now(sync=first))
        if first:
            self.first_step = self.stamps[-1].wall
        if len(self.stamps) in self.keep:
            self.images[len(self.stamps)] = pl_module.image.detach().float().cpu().clone()


@dataclass
class OursRun:
    seconds: Timing  # per step
    images: dict[int, torch.Tensor]  # step -> (K, 3, H, W) on the CPU; the last step's always
    metrics: dict[str, Any]  # run()'s return value
    wall: float  # seconds from the run() call to its return
    to_train_start: float  # seconds from the run() call to the training loop's start
    to_first_step: float  # ... to the end of the first step (the device synchronised)
    steps: int


class Lockstep(StepClock):
    """A StepClock that runs one step of each other contender after each of ours, and times each apart. On a
    shared machine whose speed drifts over minutes (docs/benchmarks.md, the standard loop), the contenders' steps then
    see the same moments, and each round of steps is at the same history fill."""

    def __init__(self, others: dict[str, Callable[[int], None]], keep: Iterable[int] = ()) -> None:
        super().__init__(keep)
        self.others = others  # name -> step(n): that contender's step n (1-based)
        self.other_stamps: dict[str, list[tuple[Stamp, Stamp]]] = {name: [] for name in others}
        self.round_ends: list[Stamp] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        for name, step in self.others.items():
            before = now()
            step(len(self.stamps))
            self.other_stamps[name].append((before, now()))
        self.round_ends.append(now())

    def timings(self, warmup: int) -> dict[str, Timing]:
        """Seconds per step after ``warmup`` steps of each: ours from the previous round's end to our step's end
        (Lightning's loop included), the others' between the stamps around each."""
        ours = list(zip(self.round_ends[warmup - 1 : -1], self.stamps[warmup:], strict=True))
        return {"ours": durations(ours)} | {name: durations(st[warmup:]) for name, st in self.other_stamps.items()}


def durations(pairs: list[tuple[Stamp, Stamp]]) -> Timing:
    wall = [b.wall - a.wall for a, b in pairs]
    return {
        "wall": statistics.median(wall),
        "cpu": statistics.median(b.cpu - a.cpu for a, b in pairs),
        "wall_mean": statistics.fmean(wall),
    }


def ours(cfg: DictConfig, warmup: int, keep: Iterable[int] = (), clock: StepClock | None = None) -> OursRun:
    """One run of the product (nst_lightning.engine.run.run, into a temporary folder) with a StepClock."""
    clock = clock or StepClock(keep)
    with tempfile.TemporaryDirectory(prefix="nst_bench_run_") as folder:
        started = time.perf_counter()
        metrics = nst_run.run(cfg, Path(folder) / "run", callbacks=[clock])
        wall = time.perf_counter() - started
    images = {**clock.images, len(clock.stamps): clock.modules[-1].image.detach().float().cpu()}
    return OursRun(
        seconds=per_step(clock.stamps, warmup),
        images=images,
        metrics=metrics,
        wall=wall,
        to_train_start=(clock.train_start or started) - started,
        to_first_step=(clock.first_step or started) - started,
        steps=len(clock.stamps),
    )


def alternate(
    contenders: dict[str, Callable[[], Timing]], pairs: int, deadline: float | None = None
) -> dict[str, list[Timing]]:
    """Run the contenders in turn, A B A B ..., ``pairs`` rounds (fewer if perf_counter passes ``deadline``
    after a whole round); each call returns its time per step."""
    times: dict[str, list[Timing]] = {name: [] for name in contenders}
    for _ in range(pairs):
        for name, contender in contenders.items():
            times[name].append(contender())
        if deadline is not None and time.perf_counter() > deadline:
            break
    return times


def medians(times: dict[str, list[Timing]], clock: str = "wall") -> dict[str, float]:
    return {name: statistics.median(t[clock] for t in trials) for name, trials in times.items() if trials}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


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


# ------------------------------------------------------------------------------------------------------------------
# 1. Framework overhead: our Lightning run vs the same objective and optimiser in a plain loop, vs the network alone
# ------------------------------------------------------------------------------------------------------------------


def stamped(run: Callable[[Callable[[int], None]], Any], warmup: int) -> tuple[Timing, Any]:
    """run(on_step) with a stamp after each step: (time per step, what run returned)."""
    stamps: list[Stamp] = []
    out = run(lambda i: stamps.append(now()))
    return per_step(stamps, warmup), out


CONTENDERS = ("ours", "plain", "network_only", "standard")


def speed_at(
    size: int,
    warmup: int,
    timed: int,
    pairs: int,
    content: Path,
    style: Path,
    seed: int,
    contenders: tuple[str, ...] = ("ours", "plain", "network_only"),
    deadline: float | None = None,
) -> dict[str, Any]:
    """Seconds per step of ``contenders`` (of CONTENDERS), alternated, ``warmup + timed`` steps each, and the
    ratios of ours to each: ``ratio`` (ours / plain: the framework), ``network_only_ratio`` (ours / the network
    alone: the limit), ``standard_step_ratio`` (ours / the usual PyTorch port)."""
    steps = warmup + timed
    cfg = make_cfg(content, style, size, steps, f"seed={seed}")
    plan = build_plan(cfg)
    objective, init = build_objective(plan, DEVICE)  # the run's objective and start, built the same way
    final: dict[str, torch.Tensor] = {}

    def run_ours() -> Timing:
        r = ours(cfg, warmup)
        final["ours"] = r.images[r.steps]
        return r.seconds

    def run_plain() -> Timing:
        nst_run.configure_device(plan)  # the CUDA settings our run uses
        seconds, final["plain"] = stamped(
            lambda on_step: plain_style_transfer(objective, init, plan.optimizer, steps, on_step), warmup
        )
        return seconds

    def run_network() -> Timing:
        nst_run.configure_device(plan)
        return stamped(lambda on_step: network_only(objective.network, init, steps, on_step), warmup)[0]

    paper = paper_loss(content, style, size) if "standard" in contenders else None

    def run_standard() -> Timing:
        def run(on_step: Callable[[int], None]) -> Any:
            return standard_style_transfer(paper, tuple(init.shape), steps, seed, (), on_step, DEVICE)

        return with_cuda_flags(STANDARD_CUDA_FLAGS, lambda: stamped(run, warmup))[0]

    runs = {"ours": run_ours, "plain": run_plain, "network_only": run_network, "standard": run_standard}
    log(f"speed {size} px: {pairs} x ({', '.join(contenders)}), {steps} steps each")
    times = alternate({name: runs[name] for name in contenders}, pairs, deadline)
    wall, cpu = medians(times, "wall"), medians(times, "cpu")
    result: dict[str, Any] = {
        "image": list(init.shape[-2:]),
        "steps_timed": timed,
        "seconds_per_step": wall,
        "cpu_seconds_per_step": cpu,
        "trials": times,
    }
    if "plain" in contenders:
        pair_ratios = [a["wall"] / b["wall"] for a, b in zip(times["ours"], times["plain"], strict=True)]
        losses = {k: objective_loss(objective, v)[0] for k, v in final.items()}  # plan precision: 32-true
        result.update(
            ratio=wall["ours"] / wall["plain"],
            cpu_ratio=cpu["ours"] / cpu["plain"],
            overhead_ms_per_step=1000 * (wall["ours"] - wall["plain"]),
            pair_ratios=pair_ratios,
            loss_rel_diff=abs(losses["ours"] / losses["plain"] - 1),  # same math: same loss after equal steps
        )
    if "network_only" in contenders:
        result["network_only_ratio"] = wall["ours"] / wall["network_only"]
        result["beyond_network_ms_per_step"] = 1000 * (wall["ours"] - wall["network_only"])  # losses, L-BFGS, rest
    if "standard" in contenders:
        result["standard_step_ratio"] = wall["ours"] / wall["standard"]
    log(
        "  s/step: "
        + ", ".join(f"{name} {wall[name]:.4f}" for name in contenders)
        + "; ours / "
        + ", ".join(
            f"{name} {result[key]:.3f}"
            for name, key in (
                ("plain", "ratio"),
                ("network only", "network_only_ratio"),
                ("standard", "standard_step_ratio"),
            )
            if key in result
        )
        + (f" (ours/plain pairs {min(pair_ratios):.3f}..{max(pair_ratios):.3f})" if "plain" in contenders else "")
    )
    return result


def overhead(s: Settings, content: Path, style: Path) -> dict[str, Any]:
    return {
        str(size): speed_at(
            size, s.overhead_warmup, s.overhead_steps[size], s.overhead_pairs[size], content, style, s.seed
        )
        for size in s.overhead_sizes
    }


# ------------------------------------------------------------------------------------------------------------------
# 2. The standard contender: the usual PyTorch port (torch.optim.LBFGS on the raw loss, 0-255 pixels) vs ours
# ------------------------------------------------------------------------------------------------------------------
# Both minimise the paper's exact objective (ours with reference_size=null: no size balance), from the same white
# noise, one evaluation per step. standard.py shares only our network and image loading; its loss is written out
# on its own. Both results are measured by our float32 objective after each checkpoint's number of steps.


def paper_loss(content: Path, style: Path, size: int) -> PaperLoss:
    """The standard contender's loss: our network (the original VGG19, average pooling), the images at ``size``."""
    c, st = load_image(str(content), size).to(DEVICE), load_image(str(style), size).to(DEVICE)
    return PaperLoss(paper_network().to(DEVICE), c, st, CONTENT_LAYER, STYLE_WEIGHTS, ALPHA, BETA)


def paper_network() -> torch.nn.Module:
    """The paper's network, as recipe=paper builds it: the original VGG19 weights, average pooling, cut after
    conv5_1."""
    return build_vgg19("pastiche", [CONTENT_LAYER, *STYLE_WEIGHTS], "avg")


def standard_at(
    size: int,
    checkpoints: tuple[int, ...],
    warmup: int,
    pairs: int,
    content: Path,
    style: Path,
    seed: int,
    deadline: float | None = None,
) -> dict[str, Any]:
    steps = max(checkpoints)
    cfg = make_cfg(content, style, size, steps, f"seed={seed}", PAPER_EXACT)
    measure = evaluator(cfg)
    paper = paper_loss(content, style, size)
    shape = tuple(measure.content.shape)
    images: dict[str, dict[int, torch.Tensor]] = {}

    def run_ours() -> Timing:
        r = ours(cfg, warmup, keep=checkpoints)
        images.setdefault("ours", r.images)
        return r.seconds

    def run_standard() -> Timing:
        def run(on_step: Callable[[int], None]) -> dict[int, torch.Tensor]:
            return standard_style_transfer(paper, shape, steps, seed, checkpoints, on_step, DEVICE)

        seconds, kept = with_cuda_flags(STANDARD_CUDA_FLAGS, lambda: stamped(run, warmup))
        images.setdefault("standard", kept)
        return seconds

    def run_lockstep() -> dict[str, Timing]:
        other = StandardRun(paper, shape, seed, DEVICE)
        kept: dict[int, torch.Tensor] = {}
        network = measure.network
        x = white_noise(shape, seed).to(DEVICE)

        def standard_step(n: int) -> None:
            other.step()
            if n in checkpoints:
                kept[n] = other.image()

        clock = Lockstep(
            {"standard": standard_step, "network_only": lambda n: network_only(network, x, 1)}, keep=checkpoints
        )
        r = ours(cfg, warmup, clock=clock)
        images.setdefault("ours", r.images)
        images.setdefault("standard", kept)
        return clock.timings(warmup)

    if DEVICE == "cpu":  # one step of each in turn, in one run (Lockstep), and the network alone beside them
        log(
            f"standard {size} px: {pairs} x (ours, standard and the network alone in lockstep), {steps} steps, "
            f"losses after {checkpoints}"
        )
        times: dict[str, list[Timing]] = {"ours": [], "standard": [], "network_only": []}
        for _ in range(pairs):
            for name, timing in run_lockstep().items():
                times[name].append(timing)
    else:  # on CUDA ours replays a CUDA graph and is timed by events on the stream: whole runs in turn
        log(f"standard {size} px: {pairs} x (ours, standard), {steps} steps each, losses after {checkpoints} steps")
        times = alternate({"ours": run_ours, "standard": run_standard}, pairs, deadline)
    start = white_noise(shape, seed)
    with torch.no_grad():  # 1.0: the standard's loss is our objective (its float32 sums in another order)
        objective_check = float(paper(start.to(DEVICE) * 255)) / objective_loss(measure, start)[0]
    losses = {name: {n: objective_loss(measure, kept[n])[0] for n in checkpoints} for name, kept in images.items()}
    wall = medians(times)
    result = {
        "image": list(shape[-2:]),
        "steps": steps,
        "seconds_per_step": wall,
        "cpu_seconds_per_step": medians(times, "cpu"),
        "trials": times,
        "step_ratio": wall["ours"] / wall["standard"],
        **({"network_only_ratio": wall["ours"] / wall["network_only"]} if "network_only" in wall else {}),
        "start_loss": objective_loss(measure, start)[0],
        "loss": {name: {str(n): v for n, v in by_step.items()} for name, by_step in losses.items()},
        "loss_ratio": {str(n): losses["ours"][n] / losses["standard"][n] for n in checkpoints},
        "objective_check": objective_check,
        "objective": "the paper's exact objective (reference_size=null), conv4_2, conv1_1..conv5_1 at 1/5, ratio 1e-3",
        "standard_cuda_flags": STANDARD_CUDA_FLAGS if DEVICE == "cuda" else None,
    }
    log(
        f"  ours {wall['ours']:.4f} s/step, standard {wall['standard']:.4f} s/step, ratio {result['step_ratio']:.3f}; "
        + ", ".join(
            f"after {n}: ours {losses['ours'][n]:.4g}, standard {losses['standard'][n]:.4g} "
            f"(ratio {result['loss_ratio'][str(n)]:.4f})"
            for n in checkpoints
        )
        + f"; objective check {objective_check:.6f}"
        + (f"; ours / network alone {result['network_only_ratio']:.3f}" if "network_only_ratio" in result else "")
    )
    return result


def standard(s: Settings, content: Path, style: Path) -> dict[str, Any]:
    return {
        str(size): standard_at(
            size, s.standard_checkpoints, s.standard_warmup, s.standard_pairs, content, style, s.seed
        )
        for size in s.standard_sizes
    }


def standard_seeds(s: Settings, content: Path, style: Path) -> dict[str, Any]:
    """The standard comparison from several white-noise starts: whether ours ends above or below the standard after
    100 and 300 steps is the start's luck or a bias of the optimiser."""
    out: dict[str, Any] = {}
    for size in s.seeds_sizes:
        runs = {
            str(seed): standard_at(size, s.standard_checkpoints, s.standard_warmup, 1, content, style, seed)
            for seed in s.seeds
        }
        out[str(size)] = {
            "loss_ratio": {
                str(n): {seed: r["loss_ratio"][str(n)] for seed, r in runs.items()} for n in s.standard_checkpoints
            },
            "step_ratio": {seed: r["step_ratio"] for seed, r in runs.items()},
            "loss": {seed: r["loss"] for seed, r in runs.items()},
        }
    return out


# ------------------------------------------------------------------------------------------------------------------
# 3. The stall case: white noise, a high-contrast striped style, 64 px, 100 steps
# ------------------------------------------------------------------------------------------------------------------
# The target: with torch.optim.LBFGS on L / L_0 (the scaled torch L-BFGS) a stall case's loss fell 11% in 100 steps
# (4.66e10 to 4.13e10). Ours must divide it by >= 100. Fall = L(start) / L(after the steps), each measured by the
# objective that run minimised, in float32; the main comparison on the paper's exact objective.


def stall_case(s: Settings, folder: Path, pattern: str) -> dict[str, Any]:
    size, steps = s.stall_size, s.stall_steps
    content, style = stall_images(folder, size, pattern)
    log(f"stall: {size} px, white noise, {STALL_STYLES[pattern]} as the style, {steps} steps")
    out: dict[str, Any] = {"style": STALL_STYLES[pattern]}
    for name, overrides, recipe in (("ours", (PAPER_EXACT,), "paper"), ("ours_product_default", (), None)):
        cfg = make_cfg(content, style, size, steps, f"seed={s.seed}", *overrides, recipe=recipe)
        measure, start = build_objective(build_plan(cfg), DEVICE, precision="32-true")
        r = ours(cfg, 1)
        out[name] = fall(objective_loss(measure, start)[0], objective_loss(measure, r.images[r.steps])[0])
    cfg = make_cfg(content, style, size, steps, f"seed={s.seed}", PAPER_EXACT)
    measure, start = build_objective(build_plan(cfg), DEVICE, precision="32-true")
    paper = paper_loss(content, style, size)
    shape = tuple(start.shape)
    kept = with_cuda_flags(
        STANDARD_CUDA_FLAGS, lambda: standard_style_transfer(paper, shape, steps, s.seed, (), device=DEVICE)
    )
    out["standard"] = fall(objective_loss(measure, start)[0], objective_loss(measure, kept[steps])[0])
    old = scaled_torch_lbfgs(measure, start, steps)
    out["scaled_torch_lbfgs"] = fall(objective_loss(measure, start)[0], objective_loss(measure, old)[0])
    out["met"] = out["ours"]["fall"] >= s.stall_target
    log(
        "  loss divided by: "
        + ", ".join(f"{k} {out[k]['fall']:.4g}" for k in ("ours", "ours_product_default", "standard"))
        + f", torch.optim.LBFGS on L/L_0 {out['scaled_torch_lbfgs']['fall']:.4g} (target ours >= {s.stall_target:g})"
    )
    return out


def stall(s: Settings, folder: Path) -> dict[str, Any]:
    """Each of ``s.stall_styles``; the first one's ours and standard are the headline (``stall_fall``)."""
    styles = {pattern: stall_case(s, folder, pattern) for pattern in s.stall_styles}
    first = styles[s.stall_styles[0]]
    return {
        "size": s.stall_size,
        "steps": s.stall_steps,
        "target": s.stall_target,
        "headline_style": s.stall_styles[0],
        "ours": first["ours"],
        "standard": first["standard"],
        "met": first["met"],
        "styles": styles,
    }


def fall(start: float, end: float) -> dict[str, float]:
    return {"start_loss": start, "end_loss": end, "fall": start / end}


# ------------------------------------------------------------------------------------------------------------------
# 4. Mixed precision: bf16-mixed vs 32-true at equal steps
# ------------------------------------------------------------------------------------------------------------------


def precision_pair(
    size: int, warmup: int, timed: int, pairs: int, content: Path, style: Path, seed: int, deadline: float | None = None
) -> dict[str, Any]:
    """32-true vs bf16-mixed runs of ``warmup + timed`` steps: time per step, and the final images' losses by the
    float32 objective."""
    steps = warmup + timed
    final: dict[str, torch.Tensor] = {}

    def contender(precision: str) -> Callable[[], Timing]:
        def run() -> Timing:
            cfg = make_cfg(content, style, size, steps, f"seed={seed}", f"trainer.precision={precision}")
            r = ours(cfg, warmup)
            final[precision] = r.images[r.steps]
            return r.seconds

        return run

    log(f"bf16: {pairs} x (32-true, bf16-mixed), {size} px, {steps} steps (native bf16: {NATIVE_BF16})")
    times = alternate({"32-true": contender("32-true"), "bf16-mixed": contender("bf16-mixed")}, pairs, deadline)
    measure = evaluator(make_cfg(content, style, size, steps, f"seed={seed}"))
    losses = {k: objective_loss(measure, v)[0] for k, v in final.items()}
    wall = medians(times)
    speedup = wall["32-true"] / wall["bf16-mixed"]
    log(
        f"  32-true {wall['32-true']:.4f} s/step, bf16 {wall['bf16-mixed']:.4f} s/step, "
        f"speed-up {speedup:.3f}; final loss fp32 {losses['32-true']:.4g}, bf16 {losses['bf16-mixed']:.4g}"
    )
    return {
        "size": size,
        "steps": steps,
        "native_bf16": NATIVE_BF16,
        "seconds_per_step": wall,
        "cpu_seconds_per_step": medians(times, "cpu"),
        "trials": times,
        "final_loss_fp32_eval": losses,
        "speedup": speedup,
        "loss_rel_diff": abs(losses["bf16-mixed"] - losses["32-true"]) / losses["32-true"],
    }


def mixed_precision(s: Settings, content: Path, style: Path) -> dict[str, Any]:
    size = s.bf16_size_native if NATIVE_BF16 else s.bf16_size
    return precision_pair(size, s.bf16_warmup, s.bf16_steps, s.bf16_pairs, content, style, s.seed)


# ------------------------------------------------------------------------------------------------------------------
# 5. Peer: pastiche 1.6.0, through its command line, on the same objective
# ------------------------------------------------------------------------------------------------------------------
# pastiche minimises  sum_c cw * clw * mse(F, P)  +  sum_l slw_l * mse(G/M, A/M)  on BGR 0-255 pixels, with
# L-BFGS(max_iter=1, lr=1), one step per evaluation: our algorithm. mse averages over N*M entries
# (content) and N*N entries (Gram). Our L = alpha/2 sum (F-P)^2 + beta sum_l w_l/(4 N^2) sum (G/M - A/M)^2.
# So with  slw_l = beta * w_l  and  cw * clw = 2 alpha N M  (N = 512, M = positions at conv4_2), pastiche's
# objective is exactly 4 x ours. Layers: our conv4_2 (rectified) is its block4_relu2, convN_1 its blockN_relu1.
# Both start from the same white-noise PNG (its --init, our init=image) and see the same pre-resized images;
# both use average pooling (its --pooling avg; its default is max) and the same VGG19 weight file.


def pastiche_args(size: int, content: Path, style: Path, init: Path, out: Path, steps: int) -> list[str]:
    h, w = Image.open(content).size[::-1]
    m = (h // 8) * (w // 8)  # positions of conv4_2: three 2x2 poolings
    style_layers = [f"block{name[4]}_relu1" for name in STYLE_WEIGHTS]
    return [
        *("--device", DEVICE, "--seed", "0", "--pooling", "avg", "--optimizer", "lbfgs"),
        *("--num-steps", str(steps), "--info-step", str(steps)),
        *("--content-layers", "block4_relu2", "--content-layer-weights", "1"),
        *("--content-weight", repr(2 * ALPHA * 512 * m)),
        *("--style-layers", *style_layers, "--style-layer-weights", *[repr(BETA * w) for w in STYLE_WEIGHTS.values()]),
        *("--size", str(size), "--style-size", str(size), "--init", str(init)),
        *("--content", str(content), "--styles", str(style), "--output", str(out)),
    ]


def ours_args(size: int, content: Path, style: Path, init: Path, out_dir: Path, steps: int) -> list[str]:
    """The command line of ours as a subprocess: the paper's recipe and exact objective, the image ``init``."""
    return [
        *(f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "seed=0"),
        *("recipe=paper", PAPER_EXACT),
        *("init=image", f"init.path={init}", "snapshot_every=0", "trainer.enable_progress_bar=false"),
        *(f"trainer.accelerator={'gpu' if DEVICE == 'cuda' else 'cpu'}", f"hydra.run.dir={out_dir}"),
    ]


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


def peer(s: Settings, content_src: Path, style_src: Path, folder: Path) -> dict[str, Any]:
    size, (short, long) = s.pastiche_size, s.pastiche_steps
    content, style, init = folder / "content.png", folder / "style.png", folder / "noise.png"
    c, st = load_image(str(content_src), size), load_image(str(style_src), size)
    save_png(c, content)
    save_png(st, style)
    save_png(white_noise(tuple(c.shape), s.seed), init)  # our white noise, 8-bit, for both
    runs: dict[str, dict[int, list[Child]]] = {"ours": {short: [], long: []}, "pastiche": {short: [], long: []}}
    outputs: dict[str, Path] = {}
    log(f"pastiche: {s.pastiche_pairs} x (ours, pastiche) at {long} then {short} steps, {size} px, subprocesses")
    for rep in range(s.pastiche_pairs):
        for steps in (long, short):
            out_dir = folder / f"ours_{steps}_{rep}"
            ran = child("nst_lightning", [*ours_args(size, content, style, init, out_dir, steps)], folder)
            runs["ours"][steps].append(ran)
            outputs.setdefault("ours", out_dir / "result.png")
            out = folder / f"pastiche_{steps}_{rep}.png"
            ran = child("pastiche", [*pastiche_args(size, content, style, init, out, steps)], folder)
            runs["pastiche"][steps].append(ran)
            outputs.setdefault("pastiche", out)
            log(f"  {steps} steps: ours {runs['ours'][steps][-1].wall:.1f} s, pastiche {ran.wall:.1f} s (wall clock)")

    def per_step_of(name: str, clock: str) -> float:  # the difference of two step counts: start-up cancels
        r = runs[name]
        return statistics.median(
            (getattr(a, clock) - getattr(b, clock)) / (long - short) for a, b in zip(r[long], r[short], strict=True)
        )

    per_step_s = {name: per_step_of(name, "wall") for name in runs}
    cpu_per_step = {name: per_step_of(name, "cpu") for name in runs}
    c = load_image(str(content), None)
    measure = evaluator(make_cfg(content, style, max(c.shape[-2:]), long, PAPER_EXACT))  # the PNGs, not resized

    def loss_of(png: Path) -> float:
        return objective_loss(measure, load_image(str(png), None))[0]

    losses = {name: loss_of(png) for name, png in outputs.items()}
    start = re.search(r"^0\s+[\d.]+\s+([\d.eE+-]+)\s*$", runs["pastiche"][long][0].output, re.MULTILINE)
    objective_check = float(start.group(1)) / (4 * loss_of(init)) if start else None
    result = {
        "size": list(c.shape[-2:]),
        "steps": long,
        "steps_short": short,
        "seconds_per_step": per_step_s,
        "cpu_seconds_per_step": cpu_per_step,
        "wall_clock_s": {name: {n: [c.wall for c in cs] for n, cs in r.items()} for name, r in runs.items()},
        "final_loss_our_eval": losses,
        "step_ratio": per_step_s["ours"] / per_step_s["pastiche"],
        "cpu_step_ratio": cpu_per_step["ours"] / cpu_per_step["pastiche"],
        "loss_ratio": losses["ours"] / losses["pastiche"],
        "objective_check": objective_check,  # pastiche's step-0 loss / (4 x ours) on the same image: 1 = same objective
        "mapping": {
            "content_layers": "block4_relu2 (our conv4_2)",
            "style_layers": "block1_relu1 ... block5_relu1 (our conv1_1 ... conv5_1)",
            "style_layer_weights": "beta * w_l = 0.2 each",
            "content_weight": "2 alpha N M, content_layer_weights 1 (pastiche objective = 4 x ours)",
            "pooling": "avg",
            "init": "the same white-noise PNG (pastiche --init, ours init=image)",
            "images": "pre-resized PNGs, --size/--style-size equal to their long sides (no resampling)",
        },
    }
    log(
        f"  ours {per_step_s['ours']:.3f} s/step, pastiche {per_step_s['pastiche']:.3f} s/step, "
        f"ratio {result['step_ratio']:.3f}; loss ratio {result['loss_ratio']:.4f}; objective check {objective_check}"
    )
    return result


# ------------------------------------------------------------------------------------------------------------------
# 6. Memory: peak RSS of a fresh process per size and precision, next to our estimate
# ------------------------------------------------------------------------------------------------------------------


def memory(s: Settings, content: Path, style: Path, folder: Path) -> dict[str, Any]:
    peak: dict[str, dict[str, float | None]] = {"fp32": {}, "bf16": {}}
    estimate: dict[str, dict[str, float]] = {"fp32": {}, "bf16": {}}
    steps: dict[str, int] = {"fp32": s.memory_steps, "bf16": s.memory_steps if NATIVE_BF16 else 1}
    skipped: dict[str, str] = {}
    w, h = Image.open(content).size
    for size in s.memory_sizes:
        for name, precision in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
            shape = (round(h * size / max(w, h)), round(w * size / max(w, h)))
            estimate[name][str(size)] = estimate_peak_bytes(*shape, steps=steps[name], precision=precision) / 2**20
            if name == "bf16" and not NATIVE_BF16 and size > s.memory_bf16_max_size:
                peak[name][str(size)] = None
                skipped[f"{name}/{size}"] = (
                    "no native bf16 on this CPU: one step takes tens of minutes; see the estimate"
                )
                continue
            args = ours_args(size, content, style, Path("x"), folder / f"memory_{name}_{size}", steps[name])
            args = [a for a in args if not a.startswith(("init=", "init.path="))]  # the default start: white noise
            peak[name][str(size)] = child(
                "nst_lightning", [*args, f"trainer.precision={precision}"], folder
            ).peak_rss_mb
            measured, estimated = peak[name][str(size)], estimate[name][str(size)]
            log(f"memory {name} {size} px: peak RSS {measured:.0f} MB, estimate {estimated:.0f} MB")
    return {"peak_rss_mb": peak, "estimate_mb": estimate, "steps": steps, "skipped": skipped}


# ------------------------------------------------------------------------------------------------------------------
# 7. Product features: batched sweeps and coarse-to-fine (benchmarks/features.py)
# ------------------------------------------------------------------------------------------------------------------


def batched_sweep(s: Settings, content: Path, style: Path, folder: Path) -> dict[str, Any]:
    """K=4 ratios as one ``batch_sweep`` batch vs 4 sequential runs: images per hour, batched / sequential
    (target >= 1.3 at 128 px), and the largest difference between batched and independent final losses."""
    log(f"batched sweep: {s.batched_repeats} x (batch of 4, 4 runs), {s.batched_size} px, {s.batched_steps} steps")
    result = features.batched(content, style, s.batched_size, s.batched_steps, s.batched_repeats, folder / "batched")
    log(f"  {result['speedup']:.3f}x images per hour; largest loss difference {result['max_loss_rel_diff']:.2e}")
    return result


def coarse_to_fine(s: Settings, content: Path, style: Path, folder: Path) -> dict[str, Any]:
    """``scales=[size/2,size]`` vs single scale at ``size``: time to the single-scale run's final loss, coarse to
    fine / single scale (target <= 0.5 at 512 px)."""
    size, steps, coarse = s.multiscale_size, s.multiscale_steps, s.multiscale_coarse_steps
    log(f"coarse to fine: {size // 2} px x {coarse} steps then {size} px, vs {size} px x {steps} steps")
    result = features.multiscale(content, style, size, steps, coarse, folder / "multiscale")
    reached = result["fine"]["steps_to_reach"]
    log(
        f"  time ratio {result['time_ratio']:.3f} "
        + (f"(single-scale loss reached after {reached} fine steps)" if result["reached"] else "(not reached)")
    )
    return result


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``--only`` reruns some parts: their keys and ``details`` replace those in the file, the others stay."""
    merged = {**old, **{k: v for k, v in new.items() if v is not None or old.get(k) is None}}
    merged["details"] = {**old.get("details", {}), **new.get("details", {})}
    return merged


# ------------------------------------------------------------------------------------------------------------------
# 8. Table, JSON, plot
# ------------------------------------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    d = results["details"]
    rows = [("comparison", "ours", "other", "ratio", "note")]
    for size, r in d.get("overhead", {}).items():
        sps = r["seconds_per_step"]
        rows.append(
            (
                f"overhead {size} px (s/step)",
                f"{sps['ours']:.3f}",
                f"{sps['plain']:.3f}",
                f"{r['ratio']:.3f}",
                "ours / plain loop; target <= 1.03 at >= 256 px",
            )
        )
    for size, r in d.get("overhead", {}).items():
        sps = r["seconds_per_step"]
        rows.append(
            (
                f"network only {size} px (s/step)",
                f"{sps['ours']:.4f}",
                f"{sps['network_only']:.4f}",
                f"{r['network_only_ratio']:.3f}",
                "ours / forward+backward of the network alone: the limit is 1",
            )
        )
    for size, r in d.get("standard", {}).items():
        sps, loss = r["seconds_per_step"], r["loss"]
        rows.append(
            (
                f"standard {size} px (s/step)",
                f"{sps['ours']:.4f}",
                f"{sps['standard']:.4f}",
                f"{r['step_ratio']:.3f}",
                "ours / torch.optim.LBFGS on the raw loss, 0-255 pixels; < 1 better",
            )
        )
        if "network_only_ratio" in r:
            rows.append(
                (
                    f"network only {size} px, lockstep (s/step)",
                    f"{sps['ours']:.4f}",
                    f"{sps['network_only']:.4f}",
                    f"{r['network_only_ratio']:.3f}",
                    f"ours / the network alone, beside the standard over {r['steps']} steps; target <= 1.05 at 256 px",
                )
            )
        for n, ratio in r["loss_ratio"].items():
            rows.append(
                (
                    f"standard {size} px, loss after {n}",
                    f"{loss['ours'][n]:.4g}",
                    f"{loss['standard'][n]:.4g}",
                    f"{ratio:.4f}",
                    "ours / standard, paper's exact objective (reference_size=null); < 1 better",
                )
            )
    for size, r in d.get("seeds", {}).items():
        for n, by_seed in r["loss_ratio"].items():
            ratios = list(by_seed.values())
            rows.append(
                (
                    f"standard {size} px, loss after {n}, {len(ratios)} seeds",
                    f"{min(ratios):.4f}",
                    f"{max(ratios):.4f}",
                    f"{statistics.geometric_mean(ratios):.4f}",
                    "ours / standard: lowest, highest, geometric mean; per seed "
                    + ", ".join(f"{seed}: {x:.4f}" for seed, x in by_seed.items()),
                )
            )
    if "stall" in d:
        st = d["stall"]
        for pattern, case in st.get("styles", {"": st}).items():
            rows.append(
                (
                    f"stall {pattern} {st['size']} px, {st['steps']} steps (fall)",
                    f"{case['ours']['fall']:.4g}",
                    f"{case['standard']['fall']:.4g}",
                    f"{case['ours']['fall'] / case['standard']['fall']:.4g}",
                    f"L(start) / L(end), ours vs standard; target ours >= {st['target']:g} "
                    f"(torch LBFGS on L/L_0: {case['scaled_torch_lbfgs']['fall']:.3g})",
                )
            )
    if "bf16" in d:
        b = d["bf16"]
        sps = b["seconds_per_step"]
        rows.append(
            (
                f"bf16 speed-up {b['size']} px (s/step)",
                f"{sps['bf16-mixed']:.3f}",
                f"{sps['32-true']:.3f}",
                f"{b['speedup']:.3f}",
                "fp32 time / bf16 time; target >= 1.8",
            )
        )
        loss = b["final_loss_fp32_eval"]
        rows.append(
            (
                f"bf16 final loss, {b['steps']} steps",
                f"{loss['bf16-mixed']:.4g}",
                f"{loss['32-true']:.4g}",
                f"{b['loss_rel_diff']:.4f}",
                "|bf16 - fp32| / fp32; target <= 0.02",
            )
        )
    if "pastiche" in d:
        p = d["pastiche"]
        sps, loss = p["seconds_per_step"], p["final_loss_our_eval"]
        rows.append(
            (
                f"pastiche {p['size'][1]} px (s/step)",
                f"{sps['ours']:.3f}",
                f"{sps['pastiche']:.3f}",
                f"{p['step_ratio']:.3f}",
                "ours / pastiche; < 1 better",
            )
        )
        rows.append(
            (
                f"pastiche final loss, {p['steps']} steps",
                f"{loss['ours']:.4g}",
                f"{loss['pastiche']:.4g}",
                f"{p['loss_ratio']:.4f}",
                "ours / pastiche, our loss; < 1 better",
            )
        )
    if "batched" in d:
        b = d["batched"]
        rows.append(
            (
                f"batched sweep K={b['k']} {b['size']} px (s)",
                f"{statistics.median(b['batch_seconds']):.1f}",
                f"{statistics.median(b['sequential_seconds']):.1f}",
                f"{b['speedup']:.3f}",
                f"sequential / batched time; target >= 1.3; loss diff <= {b['max_loss_rel_diff']:.1e}",
            )
        )
    if "multiscale" in d:
        m = d["multiscale"]
        rows.append(
            (
                f"coarse to fine {m['size']} px (s)",
                f"{m['time_ratio'] * m['single']['seconds']:.1f}",
                f"{m['single']['seconds']:.1f}",
                f"{m['time_ratio']:.3f}",
                "time to the single-scale loss / single-scale time; target <= 0.5"
                + ("" if m["reached"] else " (not reached)"),
            )
        )
    if "setup" in d:
        st = d["setup"]
        imports = st["imports_s"]
        rows.append(
            (
                "set-up, fresh process (s)",
                f"{st['process']['to_first_step_s']:.2f}",
                f"{imports['torch, torch._dynamo']:.2f}",
                f"{st['process']['to_first_step_s'] / imports['torch, torch._dynamo']:.2f}",
                f"start to first step, {st['process']['size']} px; other: python -c 'import torch, torch._dynamo' "
                "(Lightning's floor); target 3 s",
            )
        )
        rows.append(
            (
                "set-up, imports (s)",
                f"{imports['nst_lightning.engine.run']:.2f}",
                f"{imports['lightning']:.2f}",
                f"{imports['nst_lightning.engine.run'] / imports['lightning']:.2f}",
                f"import nst_lightning.engine.run, import lightning (torch alone {imports['torch']:.2f})",
            )
        )
        later = st["multirun"]["later_jobs_s"]
        rows.append(
            (
                "set-up, later jobs of a multirun (s)",
                f"{max(later):.2f}",
                f"{st['in_process']['again_in_process']['to_first_step_s']:.2f}",
                "-",
                "previous job's last step to this job's first step (max); other: run() again; target 1 s",
            )
        )
    peaks = results.get("peak_rss_mb", {})
    for precision in sorted(peaks, key=lambda p: p != "fp32"):  # fp32 first, sizes ascending (JSON sorts keys)
        for size, mb in sorted(peaks[precision].items(), key=lambda item: int(item[0])):
            est = d["memory"]["estimate_mb"][precision][size]
            rows.append(
                (
                    f"peak RSS {precision} {size} px (MB)",
                    "-" if mb is None else f"{mb:.0f}",
                    f"{est:.0f}",
                    "-" if mb is None else f"{est / mb:.3f}",
                    "measured, estimate; estimate / measured",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [1, 2.2, 1]})
    ax = axes[0]
    sizes, ratios = list(results["overhead_ratio"]), list(results["overhead_ratio"].values())
    ax.bar(range(len(sizes)), ratios, color="tab:blue", tick_label=sizes)
    for i, v in enumerate(ratios):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.03, color="tab:red", ls="--", lw=0.8, label="target 1.03")
    ax.set(title="framework overhead (ours / plain)", xlabel="size (px)", ylabel="time per step ratio")
    ax.set_ylim(min(0.9, *ratios) - 0.02, max(1.1, *ratios) + 0.03)
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    named = {
        "bf16\nspeed-up": results["bf16_speedup"],
        "pastiche step\n(ours/theirs)": results["pastiche_step_ratio"],
        "pastiche loss\n(ours/theirs)": results["pastiche_loss_ratio"],
        "batched K=4\nspeed-up": results.get("batched_speedup"),
        "coarse-to-fine\ntime ratio": results.get("multiscale_time_ratio"),
    }
    for key, label in (
        ("network_only_ratio", "network only\n(ours/net) {}"),
        ("standard_step_ratio", "standard step\n(ours/std) {}"),
    ):
        if results.get(key):
            size = max(results[key], key=int)
            named[label.format(size)] = results[key][size]
    if results.get("standard_loss_ratio"):
        size = max(results["standard_loss_ratio"], key=int)
        steps = max(results["standard_loss_ratio"][size], key=int)
        named[f"standard loss\n{steps} steps {size}"] = results["standard_loss_ratio"][size][steps]
    if results.get("stall_fall"):
        named["stall fall\nours"] = results["stall_fall"]["ours"]
        named["stall fall\nstandard"] = results["stall_fall"]["standard"]
    named = {k: v for k, v in named.items() if v is not None}
    ax.bar(list(named), list(named.values()), color="tab:green")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    for i, v in enumerate(named.values()):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set(title="ratios (log scale)")
    ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    ax = axes[2]
    mem = results["details"]["memory"]
    for precision, colour in (("fp32", "tab:blue"), ("bf16", "tab:orange")):
        measured = dict(sorted((int(k), v) for k, v in results["peak_rss_mb"][precision].items() if v is not None))
        est = dict(sorted((int(k), v) for k, v in mem["estimate_mb"][precision].items()))
        ax.plot(list(measured), list(measured.values()), "o-", color=colour, label=f"{precision} measured")
        ax.plot(list(est), list(est.values()), "x--", color=colour, alpha=0.6, label=f"{precision} estimate")
    ax.set(title="peak RSS (a few steps)", xlabel="size (px)", ylabel="MB")
    ax.legend(fontsize=8)
    fig.suptitle(f"nst-lightning benchmarks: {results['machine']['cpu']}, {results['machine']['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------------
# 9. --gpu: the GPU numbers in one short run, each sub-part on its own time budget
# ------------------------------------------------------------------------------------------------------------------
# A lent GPU machine comes for minutes (benchmarks/gpu.sh runs this under `timeout`): each sub-part starts only
# within its budget and stops alternating when past it, and the JSON is rewritten after every measurement.


@dataclass
class GpuSettings:
    setup_size: int = 64  # set-up: a tiny run, in this process and as a fresh `python -m nst_lightning`
    setup_steps: int = 5
    speed_sizes: tuple[int, ...] = (512, 1024)
    speed_warmup: int = 10  # 3 eager steps, the CUDA graph's capture, the first replays
    speed_steps: int = 40
    speed_pairs: int = 2
    bf16_size: int = 1024
    bf16_warmup: int = 10
    bf16_steps: int = 290  # 300 in all: the losses are compared where they settle
    batch_size: int = 512
    batch_k: int = 8  # batch_sweep.seed=[0..K-1]
    batch_warmup: int = 10
    batch_steps: int = 90
    standard_sizes: tuple[int, ...] = (512, 1024)
    standard_checkpoints: tuple[int, ...] = (100, 300)
    standard_warmup: int = 10
    # Seconds per sub-part, in the order they run; the sum plus start-up (~15 s) and the last sub-part's overrun
    # must stay under gpu.sh's timeout for this run (270 s).
    budgets: dict[str, float] = field(
        default_factory=lambda: {
            "setup": 25,
            "speed": 55,
            "bf16": 40,
            "batch": 35,
            "setup_process": 40,
            "standard": 45,
        }
    )
    seed: int = 0


GPU_FULL = GpuSettings()
GPU_QUICK = GpuSettings(
    setup_size=32,
    setup_steps=3,
    speed_sizes=(32, 64),
    speed_warmup=2,
    speed_steps=3,
    speed_pairs=1,
    bf16_size=32,
    bf16_warmup=1,
    bf16_steps=3,
    batch_size=32,
    batch_k=2,
    batch_warmup=1,
    batch_steps=3,
    standard_sizes=(32,),
    standard_checkpoints=(2, 4),
    standard_warmup=1,
    budgets={"setup": 120, "speed": 120, "bf16": 120, "batch": 120, "setup_process": 120, "standard": 120},
)


class GpuReport:
    """The --gpu results, rewritten to ``path`` after every measurement (a temporary file renamed over it: a reader,
    or a kill, never leaves half a file)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data, self.started = path, {**data, "parts": {}}, time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, self.path)

    def run(self, name: str, budget: float, part: Callable[[float, Callable[[str, Any], None]], None]) -> None:
        """part(deadline, put): put(key, value) records one measurement of the sub-part and saves."""
        started = time.perf_counter()
        record: dict[str, Any] = {"budget_s": budget, "status": "running"}
        self.data["parts"][name] = record

        def put(key: str, value: Any) -> None:
            record[key] = value
            self.save()

        try:
            part(started + budget, put)
            record["status"] = "done"
        except Exception as exc:  # one sub-part's failure must not cost the others
            record["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            record["traceback"] = traceback.format_exc()[-4000:]
            log(f"{name}: {record['status']}")
        record["seconds"] = time.perf_counter() - started
        self.data["seconds"] = time.perf_counter() - self.started
        self.save()

    def headline(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()


def over(deadline: float) -> bool:
    return time.perf_counter() > deadline


def gpu_setup(g: GpuSettings, content: Path, style: Path, deadline: float, put: Callable[[str, Any], None]) -> None:
    """Seconds from the run() call to the end of the first step: this process's first run (its first CUDA kernels
    and cuDNN set-up, the weights decoded) and a second one."""
    cfg = make_cfg(content, style, g.setup_size, g.setup_steps, f"seed={g.seed}")
    for label in ("first_in_process", "again_in_process"):
        if over(deadline):
            put(label, "skipped: over budget")
            continue
        r = ours(cfg, 1)
        put(label, {"to_train_start_s": r.to_train_start, "to_first_step_s": r.to_first_step, "run_s": r.wall})
        log(
            f"set-up, {label}: run() to first step {r.to_first_step:.2f} s "
            f"(to the training loop {r.to_train_start:.2f} s)"
        )


def snapshot_times(tensorboard: Path) -> dict[int, float]:
    """{step: wall time} of a run's "image" snapshots in TensorBoard (step 0: the training loop's start)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tensorboard), size_guidance={"images": 0})
    acc.Reload()
    return {event.step: event.wall_time for event in acc.Images("image")}


def process_setup(size: int, steps: int, seed: int, content: Path, style: Path, folder: Path, timeout: float) -> dict:
    """A fresh `python -m nst_lightning size=<size> steps=<steps>` (snapshot_every=1): seconds from the process
    start to the end of its first step, read from the wall time of its step-1 snapshot in TensorBoard."""
    run_dir = folder / "setup_process"
    args = [f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", f"seed={seed}"]
    args += ["snapshot_every=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "nst_lightning", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    total = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"python -m nst_lightning failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
    walls = snapshot_times(run_dir / "tensorboard")
    return {
        "to_train_start_s": walls[0] - started,
        "to_first_step_s": walls[1] - started,
        "process_s": total,
        "size": size,
        "steps": steps,
    }


def multirun_setup(
    size: int, steps: int, jobs: int, content: Path, style: Path, folder: Path, timeout: float
) -> dict[str, Any]:
    """`python -m nst_lightning -m seed=0,..,jobs-1` in one process (Hydra's basic launcher): for each job after the
    first, the seconds from the previous job's last step to this job's first step (the previous job's outputs,
    Hydra's job set-up, our set-up, one step), from the runs' snapshot wall times in TensorBoard."""
    sweep = folder / "setup_multirun"
    args = [f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "snapshot_every=1"]
    args += ["trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}", "seed=" + ",".join(map(str, range(jobs)))]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "nst_lightning", "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the multirun failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
    walls = [snapshot_times(sweep / "tensorboard" / f"seed={j}") for j in range(jobs)]
    later = [walls[j][1] - walls[j - 1][max(walls[j - 1])] for j in range(1, jobs)]
    return {
        "first_job_to_first_step_s": walls[0][1] - started,
        "later_jobs_s": later,
        "process_s": time.time() - started,
        "size": size,
        "steps": steps,
    }


# What the imports cost before any of our code runs: each a fresh interpreter, best of three. Lightning imports
# torch._dynamo at module level (lightning/fabric/wrappers.py), so "torch, torch._dynamo" is a floor for any
# Lightning run.
IMPORTS = {
    "python": "pass",
    "torch": "import torch",
    "torch, torch._dynamo": "import torch, torch._dynamo",
    "lightning": "import lightning",
    "nst_lightning.engine.run": "import nst_lightning.engine.run",
}


def import_seconds(statement: str, trials: int = 3) -> float:
    best = math.inf
    for _ in range(trials):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True, capture_output=True, timeout=120)
        best = min(best, time.perf_counter() - started)
    return best


def setup(s: Settings, content: Path, style: Path, folder: Path) -> dict[str, Any]:
    """Set-up on this machine: the import floor, a fresh process to its first step, a run in this process (first
    and again), and the later jobs of a multirun."""
    imports = {name: import_seconds(statement) for name, statement in IMPORTS.items()}
    log("imports (s): " + ", ".join(f"{k} {v:.2f}" for k, v in imports.items()))
    process = process_setup(s.setup_size, s.setup_steps, s.seed, content, style, folder, timeout=300)
    log(f"set-up, fresh process: start to first step {process['to_first_step_s']:.2f} s")
    cfg = make_cfg(content, style, s.setup_size, s.setup_steps, f"seed={s.seed}")
    in_process = {}
    for label in ("first_in_process", "again_in_process"):
        r = ours(cfg, 1)
        in_process[label] = {"to_train_start_s": r.to_train_start, "to_first_step_s": r.to_first_step}
    log(f"set-up in this process: {in_process}")
    multirun = multirun_setup(s.setup_size, s.setup_steps, s.setup_jobs, content, style, folder, timeout=600)
    log(f"multirun: later jobs {multirun['later_jobs_s']}")
    return {"imports_s": imports, "process": process, "in_process": in_process, "multirun": multirun}


def gpu_setup_process(
    g: GpuSettings, content: Path, style: Path, folder: Path, deadline: float, put: Callable[[str, Any], None]
) -> None:
    """A fresh `python -m nst_lightning size=64 steps=5` (snapshot_every=1) to its first step, and the imports alone."""
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", "import nst_lightning.engine.run"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    import_s = time.time() - started if proc.returncode == 0 else None
    put("import_s", import_s if import_s is not None else f"failed: {proc.stderr[-500:]}")
    timeout = max(30.0, deadline - time.perf_counter() + 30)
    result = process_setup(g.setup_size, g.setup_steps, g.seed, content, style, folder, timeout)
    put("process", result)
    log(
        f"set-up, fresh process: start to first step {result['to_first_step_s']:.2f} s "
        f"(to the training loop {result['to_train_start_s']:.2f} s; python -c 'import nst_lightning.engine.run' alone "
        f"{'-' if import_s is None else f'{import_s:.2f}'} s), "
        f"whole process {result['process_s']:.2f} s"
    )


def gpu_speed(g: GpuSettings, content: Path, style: Path, deadline: float, put: Callable[[str, Any], None]) -> None:
    for size in g.speed_sizes:
        if over(deadline):
            put(str(size), "skipped: over budget")
            continue
        contenders = ("ours", "standard", "network_only", "plain")
        put(
            str(size),
            speed_at(size, g.speed_warmup, g.speed_steps, g.speed_pairs, content, style, g.seed, contenders, deadline),
        )


def gpu_batch(g: GpuSettings, content: Path, style: Path, deadline: float, put: Callable[[str, Any], None]) -> None:
    """K images as one batch_sweep run (batch_sweep.seed=[0..K-1]) vs one image: images per second, over the steps
    alone (K / (steps x s/step)) and over whole run() calls (set-up included)."""
    k, size, steps = g.batch_k, g.batch_size, g.batch_warmup + g.batch_steps
    seeds = ",".join(str(i) for i in range(k))
    configs = {
        "one": make_cfg(content, style, size, steps, f"seed={g.seed}"),
        "batch": make_cfg(content, style, size, steps, f"batch_sweep.seed=[{seeds}]"),
    }
    runs: dict[str, OursRun] = {}

    def contender(name: str) -> Callable[[], Timing]:
        def run() -> Timing:
            runs[name] = ours(configs[name], g.batch_warmup)
            return runs[name].seconds

        return run

    log(f"batch: K={k} (batch_sweep.seed=[{seeds}]) vs one image, {size} px, {steps} steps each")
    times = alternate({"one": contender("one"), "batch": contender("batch")}, 1, deadline)
    wall = medians(times)
    images = {"one": 1, "batch": k}
    steps_only = {name: images[name] / (steps * wall[name]) for name in wall}
    whole = {name: images[name] / runs[name].wall for name in runs}
    result = {
        "k": k,
        "size": size,
        "steps": steps,
        "seconds_per_step": wall,
        "images_per_second_steps": steps_only,
        "images_per_second_runs": whole,
        "speedup_steps": steps_only["batch"] / steps_only["one"],
        "speedup_runs": whole["batch"] / whole["one"],
    }
    put("result", result)
    log(
        f"  s/step one {wall['one']:.4f}, batch of {k} {wall['batch']:.4f}; images/s (steps) one "
        f"{steps_only['one']:.3f}, batch {steps_only['batch']:.3f}: x{result['speedup_steps']:.2f}; "
        f"whole runs x{result['speedup_runs']:.2f}"
    )


def gpu_standard(g: GpuSettings, content: Path, style: Path, deadline: float, put: Callable[[str, Any], None]) -> None:
    """Losses of ours and of the standard contender after 100 and 300 steps; a larger size only if the time left
    covers the last size's time scaled by the pixel count (runs of hundreds of steps: no starting one in vain)."""
    last: tuple[int, float] | None = None
    for size in sorted(g.standard_sizes):
        left = deadline - time.perf_counter()
        expected = 0.0 if last is None else last[1] * (size / last[0]) ** 2
        if left <= 0 or expected > left + 15:
            put(str(size), f"skipped: {max(left, 0):.0f} s of the budget left, ~{expected:.0f} s needed")
            continue
        started = time.perf_counter()
        put(str(size), standard_at(size, g.standard_checkpoints, g.standard_warmup, 1, content, style, g.seed))
        last = (size, time.perf_counter() - started)


def gpu_summary(data: dict[str, Any]) -> str:
    parts = data["parts"]
    m = data["machine"]
    lines = [f"{m['gpu'] or 'no GPU: ' + m['cpu']}, torch {m['torch']}, CUDA {m['cuda']}, images: {data['images']}"]
    for name, record in parts.items():
        lines.append(
            f"{name}: {record.get('status')} in {record.get('seconds', 0):.0f} s (budget {record['budget_s']} s)"
        )
    for size, r in (parts.get("speed") or {}).items():
        if isinstance(r, dict) and "seconds_per_step" in r:
            sps = r["seconds_per_step"]
            lines.append(f"  {size} px ms/step: " + ", ".join(f"{k} {1000 * v:.2f}" for k, v in sps.items()))
    if isinstance((parts.get("bf16") or {}).get("result"), dict):
        b = parts["bf16"]["result"]
        lines.append(
            f"  bf16 {b['size']} px: fp32 {1000 * b['seconds_per_step']['32-true']:.2f} ms/step, bf16 "
            f"{1000 * b['seconds_per_step']['bf16-mixed']:.2f}, speed-up {b['speedup']:.3f}, "
            f"loss diff {b['loss_rel_diff']:.4f} after {b['steps']} steps"
        )
    if isinstance((parts.get("batch") or {}).get("result"), dict):
        b = parts["batch"]["result"]
        lines.append(
            f"  batch K={b['k']} {b['size']} px images/s (steps): one {b['images_per_second_steps']['one']:.3f}, "
            f"batch {b['images_per_second_steps']['batch']:.3f} (x{b['speedup_steps']:.2f})"
        )
    for size, r in (parts.get("standard") or {}).items():
        if isinstance(r, dict) and "loss_ratio" in r:
            lines.append(
                f"  standard {size} px: step ratio {r['step_ratio']:.3f}, loss ratio "
                + ", ".join(f"after {n}: {v:.4f}" for n, v in r["loss_ratio"].items())
            )
    for label in ("first_in_process", "again_in_process"):
        r = (parts.get("setup") or {}).get(label)
        if isinstance(r, dict):
            lines.append(f"  set-up {label}: {r['to_first_step_s']:.2f} s to the first step")
    r = (parts.get("setup_process") or {}).get("process")
    if isinstance(r, dict):
        lines.append(f"  set-up fresh process: {r['to_first_step_s']:.2f} s from its start to the first step")
    return "\n".join(lines)


def gpu_main(args: argparse.Namespace) -> None:
    g = GPU_QUICK if args.quick else GPU_FULL
    out = args.out or Path(__file__).resolve().parent / "gpu_results.json"
    if DEVICE != "cuda":
        log("no CUDA device: the --gpu part runs on the CPU (a smoke test, not GPU numbers)")
    with tempfile.TemporaryDirectory(prefix="nst_bench_gpu_") as tmp:
        folder = Path(tmp)
        content, style, source = input_images(folder, args.images)
        report = GpuReport(
            out,
            {
                "machine": machine(),
                "images": source,
                "quick": args.quick,
                "settings": asdict(g),
            },
        )
        log(f"{report.data['machine']['gpu'] or report.data['machine']['cpu']}, torch {torch.__version__}, {source}")
        b = g.budgets
        report.run("setup", b["setup"], lambda d, put: gpu_setup(g, content, style, d, put))
        report.run("speed", b["speed"], lambda d, put: gpu_speed(g, content, style, d, put))
        speed = {k: v for k, v in report.data["parts"]["speed"].items() if isinstance(v, dict)}
        for key in ("standard_step_ratio", "network_only_ratio", "ratio"):
            headline = {size: r[key] for size, r in speed.items() if key in r}
            report.headline("overhead_ratio" if key == "ratio" else key, headline)
        report.headline("seconds_per_step", {size: r["seconds_per_step"] for size, r in speed.items()})
        report.data["cuda_flags_of_our_runs"] = cuda_flags() if DEVICE == "cuda" else None

        def bf16(deadline: float, put: Callable[[str, Any], None]) -> None:
            put("result", precision_pair(g.bf16_size, g.bf16_warmup, g.bf16_steps, 1, content, style, g.seed, deadline))

        report.run("bf16", b["bf16"], bf16)
        bf = report.data["parts"]["bf16"].get("result")
        if bf:
            report.headline("bf16_speedup", bf["speedup"])
            report.headline("bf16_loss_rel_diff", bf["loss_rel_diff"])
        report.run("batch", b["batch"], lambda d, put: gpu_batch(g, content, style, d, put))
        batch = report.data["parts"]["batch"].get("result")
        if batch:
            report.headline("batch_images_per_second", batch["images_per_second_steps"])
            report.headline("batch_speedup", batch["speedup_steps"])
        report.run(
            "setup_process", b["setup_process"], lambda d, put: gpu_setup_process(g, content, style, folder, d, put)
        )
        setup = {**report.data["parts"]["setup"], **report.data["parts"]["setup_process"]}
        report.headline(
            "setup_seconds",
            {k: v["to_first_step_s"] for k, v in setup.items() if isinstance(v, dict) and "to_first_step_s" in v},
        )
        report.run("standard", b["standard"], lambda d, put: gpu_standard(g, content, style, d, put))
        standard_parts = {k: v for k, v in report.data["parts"]["standard"].items() if isinstance(v, dict)}
        report.headline("standard_loss_ratio", {size: r["loss_ratio"] for size, r in standard_parts.items()})
        report.data["machine"]["load_average_at_end"] = os.getloadavg()
        report.save()
    print()
    print(gpu_summary(report.data))
    print()
    log(f"wrote {out}")


PARTS = ("overhead", "standard", "stall", "bf16", "pastiche", "memory", "batched", "multiscale", "setup", "seeds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks that it all runs")
    parser.add_argument(
        "--out", type=Path, help="the JSON (default: benchmarks/results.json; with --gpu benchmarks/gpu_results.json)"
    )
    parser.add_argument("--threads", type=int, help="torch threads in this process (default: torch's choice)")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=PARTS,
        help="run only these parts: their keys replace those already in the JSON",
    )
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU part alone (~4 min on an H100), its JSON rewritten as it goes"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="sizes of the overhead, standard and seeds parts (default: 128 256 512)"
    )
    parser.add_argument("--bf16-size", type=int, help="the bf16 part's size (default: 512 with native bf16, else 128)")
    parser.add_argument(
        "--images", type=Path, help="a folder with tubingen.jpg and starry_night.jpg (default: ../shared/images)"
    )
    args = parser.parse_args()
    s = QUICK if args.quick else FULL
    if args.sizes:
        sizes = tuple(args.sizes)
        s = replace(s, overhead_sizes=sizes, standard_sizes=sizes, seeds_sizes=sizes)
    if args.bf16_size:
        s = replace(s, bf16_size=args.bf16_size, bf16_size_native=args.bf16_size)
    parts = set(args.only or PARTS)
    register_configs()
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: False", tips: not benchmark output
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.manual_seed(s.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        gpu_main(args)
        return
    out = args.out or Path(__file__).resolve().parent / "results.json"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nst_bench_") as tmp:
        folder = Path(tmp)
        content, style, source = input_images(folder, args.images)
        results: dict[str, Any] = {"machine": machine(), "images": source, "quick": args.quick, "settings": asdict(s)}
        details: dict[str, Any] = {}
        log(f"{results['machine']['cpu']} ({DEVICE}), images: {source}")
        if "overhead" in parts:
            details["overhead"] = overhead(s, content, style)
            results["overhead_ratio"] = {k: v["ratio"] for k, v in details["overhead"].items()}
            results["network_only_ratio"] = {k: v["network_only_ratio"] for k, v in details["overhead"].items()}
        if "standard" in parts:
            details["standard"] = standard(s, content, style)
            results["standard_step_ratio"] = {k: v["step_ratio"] for k, v in details["standard"].items()}
            results["standard_loss_ratio"] = {k: v["loss_ratio"] for k, v in details["standard"].items()}
        if "stall" in parts:
            details["stall"] = stall(s, folder)
            results["stall_fall"] = {k: details["stall"][k]["fall"] for k in ("ours", "standard")}
        if "bf16" in parts:
            details["bf16"] = mixed_precision(s, content, style)
            results["bf16_speedup"] = details["bf16"]["speedup"]
            results["bf16_loss_rel_diff"] = details["bf16"]["loss_rel_diff"]
        if "pastiche" in parts:
            details["pastiche"] = peer(s, content, style, folder)
            results["pastiche_step_ratio"] = details["pastiche"]["step_ratio"]
            results["pastiche_loss_ratio"] = details["pastiche"]["loss_ratio"]
        if "memory" in parts:
            details["memory"] = memory(s, content, style, folder)
            results["peak_rss_mb"] = details["memory"]["peak_rss_mb"]
        if "batched" in parts:
            details["batched"] = batched_sweep(s, content, style, folder)
            results["batched_speedup"] = details["batched"]["speedup"]
        if "multiscale" in parts:
            details["multiscale"] = coarse_to_fine(s, content, style, folder)
            results["multiscale_time_ratio"] = details["multiscale"]["time_ratio"]
        if "seeds" in parts:
            details["seeds"] = standard_seeds(s, content, style)
            results["standard_loss_ratio_seeds"] = {k: v["loss_ratio"] for k, v in details["seeds"].items()}
        if "setup" in parts:
            details["setup"] = setup(s, content, style, folder)
            results["setup_seconds"] = {
                "process_to_first_step": details["setup"]["process"]["to_first_step_s"],
                "import_floor_torch_dynamo": details["setup"]["imports_s"]["torch, torch._dynamo"],
                "again_in_process": details["setup"]["in_process"]["again_in_process"]["to_first_step_s"],
                "multirun_later_job_max": max(details["setup"]["multirun"]["later_jobs_s"]),
            }
    results["details"] = details
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.is_file() else {}
    results = merge(old, results) if args.only else results
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print()
    print(table(results))
    print()
    log(f"wrote {out}")
    if parts == set(PARTS):
        plot(results, out.with_suffix(".png"))
        log(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
