"""The standard contender: the usual PyTorch port of the paper (standard.py: torch.optim.LBFGS on the raw loss, 0-255
pixels) vs ours: seconds per step, and the losses after each checkpoint's number of steps.

Both minimise the paper's exact objective (ours with reference_size=null: no size balance), from the same white
noise, one evaluation per step. standard.py shares only our network and image loading; its loss is written out
on its own. Both results are measured by our float32 objective.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import adapter
import clock
import torch
from clock import Lockstep, Timing
from common import (
    DEVICE,
    PAPER_EXACT,
    STANDARD_CUDA_FLAGS,
    Inputs,
    Row,
    Settings,
    evaluator,
    log,
    make_cfg,
    paper_loss,
    with_cuda_flags,
)
from omegaconf import DictConfig
from plain_loop import network_only, objective_loss
from standard import PaperLoss, StandardRun, standard_style_transfer

OBJECTIVE = "the paper's exact objective (reference_size=null), conv4_2, conv1_1..conv5_1 at 1/5, ratio 1e-3"


class Runs:
    """Ours and the standard at one size from one start; the images of each after the checkpoints' steps in
    ``images`` (those of the first run of each)."""

    def __init__(
        self,
        cfg: DictConfig,
        paper: PaperLoss,
        measure: adapter.Objective,
        warmup: int,
        checkpoints: tuple[int, ...],
        seed: int,
    ) -> None:
        self.cfg, self.paper, self.measure = cfg, paper, measure
        self.warmup, self.checkpoints, self.seed = warmup, checkpoints, seed
        self.steps = max(checkpoints)
        self.shape = adapter.content_shape(measure)
        self.images: dict[str, dict[int, torch.Tensor]] = {}

    def ours(self) -> Timing:
        r = clock.ours(self.cfg, self.warmup, keep=self.checkpoints)
        self.images.setdefault("ours", r.images)
        return r.seconds

    def standard(self) -> Timing:
        def run(on_step: Callable[[int], None]) -> dict[int, torch.Tensor]:
            return standard_style_transfer(
                self.paper, self.shape, self.steps, self.seed, self.checkpoints, on_step, DEVICE
            )

        seconds, kept = with_cuda_flags(STANDARD_CUDA_FLAGS, lambda: clock.stamped(run, self.warmup))
        self.images.setdefault("standard", kept)
        return seconds

    def lockstep(self) -> dict[str, Timing]:
        """One run of ours that, after each of its steps, runs one step of the standard and one forward + backward
        of the network alone (Lockstep)."""
        other = StandardRun(self.paper, self.shape, self.seed, DEVICE)
        kept: dict[int, torch.Tensor] = {}
        network = adapter.objective_network(self.measure)
        x = adapter.white_noise(self.shape, self.seed).to(DEVICE)

        def standard_step(n: int) -> None:
            other.step()
            if n in self.checkpoints:
                kept[n] = other.image()

        lock = Lockstep(
            {"standard": standard_step, "network_only": lambda n: network_only(network, x, 1)}, keep=self.checkpoints
        )
        r = clock.ours(self.cfg, self.warmup, clock=lock)
        self.images.setdefault("ours", r.images)
        self.images.setdefault("standard", kept)
        return lock.timings(self.warmup)

    def times(self, size: int, pairs: int, deadline: float | None) -> dict[str, list[Timing]]:
        if DEVICE == "cpu":  # one step of each in turn, in one run (Lockstep), and the network alone beside them
            log(
                f"standard {size} px: {pairs} x (ours, standard and the network alone in lockstep), {self.steps} "
                f"steps, losses after {self.checkpoints}"
            )
            times: dict[str, list[Timing]] = {"ours": [], "standard": [], "network_only": []}
            for _ in range(pairs):
                for name, timing in self.lockstep().items():
                    times[name].append(timing)
            return times
        # on CUDA ours replays a CUDA graph and is timed by events on the stream: whole runs in turn
        log(
            f"standard {size} px: {pairs} x (ours, standard), {self.steps} steps each, losses after "
            f"{self.checkpoints} steps"
        )
        return clock.alternate({"ours": self.ours, "standard": self.standard}, pairs, deadline)


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
    cfg = make_cfg(content, style, size, max(checkpoints), f"seed={seed}", PAPER_EXACT)
    measure = evaluator(cfg)
    runs = Runs(cfg, paper_loss(content, style, size), measure, warmup, checkpoints, seed)
    result = standard_result(runs, runs.times(size, pairs, deadline))
    log(standard_line(result, checkpoints))
    return result


def standard_result(runs: Runs, times: dict[str, list[Timing]]) -> dict[str, Any]:
    start = adapter.white_noise(runs.shape, runs.seed)
    with torch.no_grad():  # 1.0: the standard's loss is our objective (its float32 sums in another order)
        objective_check = float(runs.paper(start.to(DEVICE) * 255)) / objective_loss(runs.measure, start)[0]
    losses = {
        name: {n: objective_loss(runs.measure, kept[n])[0] for n in runs.checkpoints}
        for name, kept in runs.images.items()
    }
    wall = clock.medians(times)
    return {
        "image": list(runs.shape[-2:]),
        "steps": runs.steps,
        "seconds_per_step": wall,
        "cpu_seconds_per_step": clock.medians(times, "cpu"),
        "trials": times,
        "step_ratio": wall["ours"] / wall["standard"],
        **({"network_only_ratio": wall["ours"] / wall["network_only"]} if "network_only" in wall else {}),
        "start_loss": objective_loss(runs.measure, start)[0],
        "loss": {name: {str(n): v for n, v in by_step.items()} for name, by_step in losses.items()},
        "loss_ratio": {str(n): losses["ours"][n] / losses["standard"][n] for n in runs.checkpoints},
        "objective_check": objective_check,
        "objective": OBJECTIVE,
        "standard_cuda_flags": STANDARD_CUDA_FLAGS if DEVICE == "cuda" else None,
    }


def standard_line(result: dict[str, Any], checkpoints: tuple[int, ...]) -> str:
    wall, loss = result["seconds_per_step"], result["loss"]
    return (
        f"  ours {wall['ours']:.4f} s/step, standard {wall['standard']:.4f} s/step, ratio {result['step_ratio']:.3f}; "
        + ", ".join(
            f"after {n}: ours {loss['ours'][str(n)]:.4g}, standard {loss['standard'][str(n)]:.4g} "
            f"(ratio {result['loss_ratio'][str(n)]:.4f})"
            for n in checkpoints
        )
        + f"; objective check {result['objective_check']:.6f}"
        + (f"; ours / network alone {result['network_only_ratio']:.3f}" if "network_only_ratio" in result else "")
    )


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    return {
        str(size): standard_at(
            size, s.standard_checkpoints, s.standard_warmup, s.standard_pairs, inputs.content, inputs.style, s.seed
        )
        for size in s.standard_sizes
    }


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "standard_step_ratio": {k: v["step_ratio"] for k, v in details.items()},
        "standard_loss_ratio": {k: v["loss_ratio"] for k, v in details.items()},
    }


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for size, r in results["details"].get("standard", {}).items():
        sps, loss = r["seconds_per_step"], r["loss"]
        out.append(
            (
                f"standard {size} px (s/step)",
                f"{sps['ours']:.4f}",
                f"{sps['standard']:.4f}",
                f"{r['step_ratio']:.3f}",
                "ours / torch.optim.LBFGS on the raw loss, 0-255 pixels; < 1 better",
            )
        )
        if "network_only_ratio" in r:
            out.append(
                (
                    f"network only {size} px, lockstep (s/step)",
                    f"{sps['ours']:.4f}",
                    f"{sps['network_only']:.4f}",
                    f"{r['network_only_ratio']:.3f}",
                    f"ours / the network alone, beside the standard over {r['steps']} steps; target <= 1.05 at 256 px",
                )
            )
        out += [
            (
                f"standard {size} px, loss after {n}",
                f"{loss['ours'][n]:.4g}",
                f"{loss['standard'][n]:.4g}",
                f"{ratio:.4f}",
                "ours / standard, paper's exact objective (reference_size=null); < 1 better",
            )
            for n, ratio in r["loss_ratio"].items()
        ]
    return out
