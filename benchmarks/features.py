"""Two product features measured against the plain way of getting the same images (parts/batched.py and
parts/multiscale.py of run.py):

- ``batched``: a sweep of K=4 ratios as one batch (``batch_sweep``) vs the 4 runs one after the other,
  images per hour (whole runs, set-up included), alternating the two, median of the repeats; and how far
  the batched images' final losses are from the separate runs' (one optimiser state per image: ~equal).
- ``multiscale``: coarse to fine (``scales=[size/2,size]``) vs single scale at ``size``: the time the
  coarse-to-fine run needs to reach the single-scale run's final loss (both measured at full size, by our
  loss), over the single-scale run's time. Below 1: coarse to fine is faster.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import adapter
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def config(content: Path, style: Path, *overrides: str) -> DictConfig:
    quiet = ["snapshot_every=0", "trainer.enable_progress_bar=false"]
    return adapter.compose_config([f"content={content}", f"style={style}", *quiet, *overrides])


def timed_run(cfg: DictConfig, folder: Path) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    metrics = adapter.run(cfg, folder)
    return time.perf_counter() - start, metrics


def batched(content: Path, style: Path, size: int, steps: int, repeats: int, work: Path) -> dict[str, Any]:
    ratios = ["1e-4", "1e-3", "1e-2", "1e-1"]
    common = (f"size={size}", f"steps={steps}")
    batch_times, separate_times, diffs, setup = [], [], [], []
    for r in range(repeats):  # alternate: the batch, then the K separate runs
        seconds, batch = timed_run(
            config(content, style, *common, f"batch_sweep.ratio=[{','.join(ratios)}]"), work / f"batch_{r}"
        )
        batch_times.append(seconds)
        total = 0.0
        for i, ratio in enumerate(ratios):
            seconds, alone = timed_run(config(content, style, *common, f"ratio={ratio}"), work / f"alone_{r}_{i}")
            total += seconds
            setup.append(seconds - alone["seconds"])  # images, network, targets, loggers: outside the steps
            together = list(batch["batch"].values())[i]
            diffs.append(abs(together["loss_total"] - alone["loss_total"]) / alone["loss_total"])
        separate_times.append(total)
    speedup = statistics.median(separate_times) / statistics.median(batch_times)
    return {
        "speedup": speedup,  # images per hour, batched / sequential
        "max_loss_rel_diff": max(diffs),
        "size": size,
        "steps": steps,
        "k": len(ratios),
        "batch_seconds": batch_times,
        "sequential_seconds": separate_times,
        "setup_seconds_per_run": statistics.median(setup),  # what sharing set-up across runs could save at most
    }


def loss_curve(folder: Path) -> list[float]:
    """loss/total of every step of the run in ``folder`` (TensorBoard): the loss before update k."""
    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [event.value for event in acc.Scalars("loss/total")]


def multiscale(content: Path, style: Path, size: int, steps: int, coarse_steps: int, work: Path) -> dict[str, Any]:
    coarse = size // 2
    _, single = timed_run(config(content, style, f"size={size}", f"steps={steps}"), work / "single")
    target = single["loss_total"]  # the single-scale result's loss, at full size
    multi_cfg = config(content, style, f"scales=[{coarse},{size}]", f"scale_steps=[{coarse_steps},{steps}]")
    _, multi = timed_run(multi_cfg, work / "multi")
    first = json.loads((work / "multi" / "stages" / f"0_{coarse}px" / "metrics.json").read_text())
    curve = loss_curve(work / "multi")  # the fine stage: curve[k] is the loss after k fine steps
    reached = next((k for k, loss in enumerate([*curve, multi["loss_total"]]) if loss <= target), None)
    # Why the ratio is what it is: the upsampled coarse result's loss at full size (curve[0]) is a loss the
    # single-scale run reaches after some step; from there both take about the same number of steps.
    single_curve = loss_curve(work / "single")
    single_reaches_start = next((k for k, loss in enumerate(single_curve) if loss <= curve[0]), None)
    fine_steps = steps if reached is None else reached
    seconds = first["seconds"] + fine_steps * multi["seconds_per_step"]
    return {
        "time_ratio": seconds / single["seconds"],
        "reached": reached is not None,  # False: the ratio is a lower bound of the true one
        "size": size,
        "single": {"steps": steps, "seconds": single["seconds"], "loss": target},
        "coarse": {"size": coarse, "steps": coarse_steps, "seconds": first["seconds"]},
        "fine": {"steps_to_reach": reached, "seconds_per_step": multi["seconds_per_step"]},
        "head_start_steps": None if reached is None else steps - reached,  # fine steps the coarse stage saved
        "fine_start_loss": curve[0],  # the upsampled coarse result, at full size
        "coarse_final_loss": first["loss_total"],  # before upsampling: the coarse objective (alpha scaled)
        "single_steps_to_fine_start_loss": single_reaches_start,
        "single_loss_curve": single_curve[:: max(1, steps // 20)],
        "fine_loss_curve": curve[:: max(1, steps // 20)],
        "loss_ratio_at_equal_fine_steps": multi["loss_total"] / target,
    }
