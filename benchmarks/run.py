"""nst-lightning benchmarks: every comparison side by side in one process, reported as ratios.

    python benchmarks/run.py [--quick] [--out benchmarks/results.json]

Each comparison alternates its contenders (A B A B ...) so that a slow minute of a busy machine hits both
alike, and reports medians and the ratio of medians. Results go to the terminal (a table), to a JSON file
and to a small plot next to it (results.png). Read top to bottom:

  0. settings, inputs, helpers
  1. framework overhead: our Lightning run vs a plain PyTorch L-BFGS loop (benchmarks/plain_loop.py)
  2. mixed precision: trainer.precision=bf16-mixed vs 32-true
  3. peer: pastiche 1.6.0 (its CLI, as a subprocess) vs ours, same objective
  4. memory: peak RSS of fresh `python -m nst_lightning` processes vs nst_lightning.memory's estimate
  5. product features: batched sweeps vs sequential runs, coarse-to-fine vs single scale (features.py)
  6. table, JSON, plot

Timings exclude set-up: a run's seconds per step are taken between the end of its warm-up steps and its
last step. Every loss is "our loss" (nst_lightning.losses: alpha L_content + beta L_style) evaluated in float32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

import nst_lightning.run as nst_run
from nst_lightning.config import conf_dir, register_configs
from nst_lightning.images import load_image, save_png, white_noise
from nst_lightning.memory import estimate_peak_bytes
from nst_lightning.vgg import build_vgg19

sys.path.insert(0, str(Path(__file__).resolve().parent))
import features  # this folder is not a package
from plain_loop import plain_style_transfer, total_loss

ROOT = Path(__file__).resolve().parent.parent
SHARED_IMAGES = ROOT.parent / "shared" / "images"

# The paper's setting, as our defaults: conv4_2 content, five convN_1 style layers with equal weights,
# ratio alpha/beta = 1e-3 with beta = 1, average pooling, the original VGG19 weights.
CONTENT_LAYER = "conv4_2"
STYLE_WEIGHTS = {name: 0.2 for name in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")}
ALPHA, BETA = 1e-3, 1.0


# ------------------------------------------------------------------------------------------------------------------
# 0. Settings, inputs, helpers
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    overhead_sizes: tuple[int, ...] = (128, 256, 512)
    overhead_warmup: int = 3  # steps before the clock starts (allocator, L-BFGS's first steps)
    overhead_steps: dict[int, int] = field(default_factory=lambda: {128: 15, 256: 8, 512: 4})  # timed steps
    overhead_pairs: dict[int, int] = field(default_factory=lambda: {128: 7, 256: 4, 512: 3})  # A B pairs
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
    seed: int = 0


FULL = Settings()
QUICK = Settings(
    overhead_sizes=(128, 256),
    overhead_warmup=2,
    overhead_steps={128: 5, 256: 3},
    overhead_pairs={128: 2, 256: 2},
    bf16_size=64,
    bf16_size_native=256,
    bf16_steps=4,
    bf16_warmup=1,
    pastiche_size=128,
    pastiche_steps=(2, 12),
    pastiche_pairs=1,
    memory_sizes=(128, 256),
    memory_steps=1,
    memory_bf16_max_size=128,
    batched_size=64,
    batched_steps=3,
    batched_repeats=1,
    multiscale_size=64,
    multiscale_steps=4,
    multiscale_coarse_steps=4,
)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NATIVE_BF16 = DEVICE == "cuda" or bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def machine() -> dict[str, Any]:
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return {
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_bf16_instructions": sorted({"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"} & cpu_flags()),
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else None,
        "device": DEVICE,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "git": git.stdout.strip(),
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


def input_images(folder: Path) -> tuple[Path, Path, str]:
    """(content, style, where from): tubingen x starry_night from ../shared/images, else synthetic ones."""
    content, style = SHARED_IMAGES / "tubingen.jpg", SHARED_IMAGES / "starry_night.jpg"
    if content.is_file() and style.is_file():
        return content, style, "tubingen.jpg x starry_night.jpg (../shared/images)"
    return (*synthetic_images(folder), "synthetic (../shared/images not found)")


def make_cfg(content: Path, style: Path, size: int, steps: int, *overrides: str) -> DictConfig:
    """Our configuration as the CLI composes it, at the paper's defaults; no snapshots and no progress bar."""
    base = [f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "snapshot_every=0"]
    base += ["trainer.enable_progress_bar=false", f"trainer.accelerator={'gpu' if DEVICE == 'cuda' else 'cpu'}"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=base + list(overrides))


Timing = dict[str, float]  # {"wall": seconds, "cpu": seconds of this process's CPU time (all threads)}


def now() -> Timing:
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return {"wall": time.perf_counter(), "cpu": time.process_time()}


def per_step(stamps: list[Timing], warmup: int) -> Timing:
    """Seconds per step after ``warmup`` steps (stamps: one per step end): the median of the step durations,
    so that a moment when another process takes the cores does not count.

    Wall-clock time is what a user waits; CPU time is reported next to it because it is less sensitive to
    other processes competing for the cores (it still counts OpenMP threads waiting for each other)."""
    return {
        k: statistics.median(b[k] - a[k] for a, b in zip(stamps[warmup - 1 : -1], stamps[warmup:], strict=True))
        for k in ("wall", "cpu")
    }


@contextlib.contextmanager
def timed_build_module(stamps: list[Timing], modules: list[Any]) -> Iterator[None]:
    """Make nst_lightning.run.run's module stamp the clock at the end of every step (Lightning's
    on_train_batch_end, after the step, its hooks and its logging), and hand it back for inspection."""
    original = nst_run.build_module

    def build(*args: Any, **kwargs: Any) -> Any:
        module = original(*args, **kwargs)
        module.on_train_batch_end = lambda *a, **k: stamps.append(now())
        modules.append(module)
        return module

    nst_run.build_module = build
    try:
        yield
    finally:
        nst_run.build_module = original


def ours(cfg: DictConfig, warmup: int) -> tuple[Timing, torch.Tensor]:
    """One run of the product (nst_lightning.run.run, into a temp folder): time per step, final image."""
    stamps: list[Timing] = []
    modules: list[Any] = []
    with timed_build_module(stamps, modules), tempfile.TemporaryDirectory() as folder:
        nst_run.run(cfg, Path(folder) / "run")
    return per_step(stamps, warmup), modules[-1].image.detach()[:1].float().cpu()


def alternate(contenders: dict[str, Callable[[], Timing]], pairs: int) -> dict[str, list[Timing]]:
    """Run the contenders in turn, A B A B ..., ``pairs`` rounds; each call returns its time per step."""
    times: dict[str, list[Timing]] = {name: [] for name in contenders}
    for _ in range(pairs):
        for name, contender in contenders.items():
            times[name].append(contender())
    return times


def medians(times: dict[str, list[Timing]], clock: str = "wall") -> dict[str, float]:
    return {name: statistics.median(t[clock] for t in trials) for name, trials in times.items()}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------------------------
# 1. Framework overhead: our Lightning run vs a plain PyTorch loop with the same math
# ------------------------------------------------------------------------------------------------------------------


def overhead_at(size: int, s: Settings, content: Path, style: Path) -> dict[str, Any]:
    steps = s.overhead_warmup + s.overhead_steps[size]
    cfg = make_cfg(content, style, size, steps, f"seed={s.seed}")
    c, st = load_image(str(content), size).to(DEVICE), load_image(str(style), size).to(DEVICE)
    init = white_noise(tuple(c.shape), s.seed).to(DEVICE)  # init=noise, as our run makes it
    network = build_vgg19("pastiche", [CONTENT_LAYER, *STYLE_WEIGHTS], "avg").to(DEVICE)
    final: dict[str, torch.Tensor] = {}

    def run_ours() -> Timing:
        seconds, final["ours"] = ours(cfg, s.overhead_warmup)
        return seconds

    def run_plain() -> Timing:
        stamps: list[Timing] = []
        args = (network, c, st, init, CONTENT_LAYER, STYLE_WEIGHTS, ALPHA, BETA, steps)
        final["plain"] = plain_style_transfer(*args, on_step=lambda i: stamps.append(now())).cpu()
        return per_step(stamps, s.overhead_warmup)

    log(f"overhead {size} px: {s.overhead_pairs[size]} x (ours, plain), {steps} steps each")
    times = alternate({"ours": run_ours, "plain": run_plain}, s.overhead_pairs[size])
    losses = {
        k: total_loss(network, c, st, v.to(DEVICE), CONTENT_LAYER, STYLE_WEIGHTS, ALPHA, BETA) for k, v in final.items()
    }
    wall, cpu = medians(times, "wall"), medians(times, "cpu")
    pair_ratios = [a["wall"] / b["wall"] for a, b in zip(times["ours"], times["plain"], strict=True)]
    ratio, cpu_ratio = wall["ours"] / wall["plain"], cpu["ours"] / cpu["plain"]
    log(
        f"  ours {wall['ours']:.3f} s/step, plain {wall['plain']:.3f} s/step, ratio {ratio:.3f} "
        f"(pairs {min(pair_ratios):.3f}..{max(pair_ratios):.3f}); CPU time ratio {cpu_ratio:.3f}"
    )
    return {
        "image": list(c.shape[-2:]),
        "steps_timed": s.overhead_steps[size],
        "seconds_per_step": wall,
        "cpu_seconds_per_step": cpu,
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "overhead_ms_per_step": 1000 * (wall["ours"] - wall["plain"]),
        "pair_ratios": pair_ratios,
        "trials": times,
        "loss_rel_diff": abs(losses["ours"] / losses["plain"] - 1),  # same math: same loss after equal steps
    }


def overhead(s: Settings, content: Path, style: Path) -> dict[str, Any]:
    return {str(size): overhead_at(size, s, content, style) for size in s.overhead_sizes}


# ------------------------------------------------------------------------------------------------------------------
# 2. Mixed precision: bf16-mixed vs 32-true at equal steps
# ------------------------------------------------------------------------------------------------------------------


def mixed_precision(s: Settings, content: Path, style: Path) -> dict[str, Any]:
    size = s.bf16_size_native if NATIVE_BF16 else s.bf16_size
    steps = s.bf16_warmup + s.bf16_steps
    final: dict[str, torch.Tensor] = {}

    def contender(precision: str) -> Callable[[], Timing]:
        def run() -> Timing:
            cfg = make_cfg(content, style, size, steps, f"seed={s.seed}", f"trainer.precision={precision}")
            seconds, final[precision] = ours(cfg, s.bf16_warmup)
            return seconds

        return run

    log(f"bf16: {s.bf16_pairs} x (32-true, bf16-mixed), {size} px, {steps} steps (native bf16: {NATIVE_BF16})")
    times = alternate({"32-true": contender("32-true"), "bf16-mixed": contender("bf16-mixed")}, s.bf16_pairs)
    c, st = load_image(str(content), size).to(DEVICE), load_image(str(style), size).to(DEVICE)
    network = build_vgg19("pastiche", [CONTENT_LAYER, *STYLE_WEIGHTS], "avg").to(DEVICE)
    losses = {
        k: total_loss(network, c, st, v.to(DEVICE), CONTENT_LAYER, STYLE_WEIGHTS, ALPHA, BETA) for k, v in final.items()
    }
    wall = medians(times)
    speedup = wall["32-true"] / wall["bf16-mixed"]
    log(
        f"  32-true {wall['32-true']:.3f} s/step, bf16 {wall['bf16-mixed']:.3f} s/step, "
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


# ------------------------------------------------------------------------------------------------------------------
# 3. Peer: pastiche 1.6.0, through its command line, on the same objective
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
    return [
        *(f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "seed=0"),
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
    c, st = load_image(str(content), None).to(DEVICE), load_image(str(style), None).to(DEVICE)
    network = build_vgg19("pastiche", [CONTENT_LAYER, *STYLE_WEIGHTS], "avg").to(DEVICE)

    def loss_of(png: Path) -> float:
        return total_loss(
            network, c, st, load_image(str(png), None).to(DEVICE), CONTENT_LAYER, STYLE_WEIGHTS, ALPHA, BETA
        )

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
# 4. Memory: peak RSS of a fresh process per size and precision, next to our estimate
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
# 5. Product features: batched sweeps and coarse-to-fine (benchmarks/features.py)
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
# 6. Table, JSON, plot
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

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
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


PARTS = ("overhead", "bf16", "pastiche", "memory", "batched", "multiscale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks that it all runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.json")
    parser.add_argument("--threads", type=int, help="torch threads in this process (default: torch's choice)")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=PARTS,
        help="run only these parts: their keys replace those already in the JSON",
    )
    args = parser.parse_args()
    s = QUICK if args.quick else FULL
    parts = set(args.only or PARTS)
    register_configs()
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: False", tips: not benchmark output
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.manual_seed(s.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nst_bench_") as tmp:
        folder = Path(tmp)
        content, style, source = input_images(folder)
        results: dict[str, Any] = {"machine": machine(), "images": source, "quick": args.quick, "settings": asdict(s)}
        details: dict[str, Any] = {}
        log(f"{results['machine']['cpu']} ({DEVICE}), images: {source}")
        if "overhead" in parts:
            details["overhead"] = overhead(s, content, style)
            results["overhead_ratio"] = {k: v["ratio"] for k, v in details["overhead"].items()}
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
    results["details"] = details
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = merge(old, results) if args.only else results
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print()
    print(table(results))
    print()
    log(f"wrote {args.out}")
    if parts == set(PARTS):
        plot(results, args.out.with_suffix(".png"))
        log(f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
