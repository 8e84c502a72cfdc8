"""The step clock: stamps per step, seconds per step, and the contenders run in turn.

Timings exclude set-up: a run's seconds per step are the median of its step durations after its warm-up steps
(on CUDA from events recorded on the stream, so the step is never made to wait for the host).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adapter
import lightning as L
import torch
from common import DEVICE
from omegaconf import DictConfig

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


def durations(pairs: list[tuple[Stamp, Stamp]]) -> Timing:
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
            self.images[len(self.stamps)] = adapter.module_image(pl_module).detach().float().cpu().clone()


class Lockstep(StepClock):
    """A StepClock that runs one step of each other contender after each of ours, and times each apart. On a
    shared machine whose speed drifts over minutes, the contenders' steps then see the same moments, and each
    round of steps is at the same history fill."""

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


@dataclass
class OursRun:
    seconds: Timing  # per step
    images: dict[int, torch.Tensor]  # step -> (K, 3, H, W) on the CPU; the last step's always
    metrics: dict[str, Any]  # run()'s return value
    wall: float  # seconds from the run() call to its return
    to_train_start: float  # seconds from the run() call to the training loop's start
    to_first_step: float  # ... to the end of the first step (the device synchronised)
    steps: int


def ours(cfg: DictConfig, warmup: int, keep: Iterable[int] = (), clock: StepClock | None = None) -> OursRun:
    """One run of the product (nst_lightning.engine.run.run, into a temporary folder) with a StepClock."""
    clock = clock or StepClock(keep)
    with tempfile.TemporaryDirectory(prefix="nst_bench_run_") as folder:
        started = time.perf_counter()
        metrics = adapter.run(cfg, Path(folder) / "run", callbacks=[clock])
        wall = time.perf_counter() - started
    images = {**clock.images, len(clock.stamps): adapter.module_image(clock.modules[-1]).detach().float().cpu()}
    return OursRun(
        seconds=per_step(clock.stamps, warmup),
        images=images,
        metrics=metrics,
        wall=wall,
        to_train_start=(clock.train_start or started) - started,
        to_first_step=(clock.first_step or started) - started,
        steps=len(clock.stamps),
    )


def stamped(run: Callable[[Callable[[int], None]], Any], warmup: int) -> tuple[Timing, Any]:
    """run(on_step) with a stamp after each step: (time per step, what run returned)."""
    stamps: list[Stamp] = []
    out = run(lambda i: stamps.append(now()))
    return per_step(stamps, warmup), out


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
