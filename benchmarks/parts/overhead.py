"""Framework overhead: our Lightning run vs the same objective and L-BFGS in a plain loop (plain_loop.py), and vs the
network alone (forward + backward, no loss: the limit). The --gpu part adds the standard contender (standard.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import adapter
import clock
import torch
from clock import Timing
from common import DEVICE, STANDARD_CUDA_FLAGS, Inputs, Row, Settings, log, make_cfg, paper_loss, with_cuda_flags
from plain_loop import network_only, objective_loss, plain_style_transfer
from standard import standard_style_transfer

CONTENDERS = ("ours", "plain", "network_only", "standard")
# (contender, key of ours / it in the result), as the log line names them
RATIOS = (("plain", "ratio"), ("network only", "network_only_ratio"), ("standard", "standard_step_ratio"))


class Contenders:
    """The contenders at one size: each method runs ``steps`` steps once and returns its time per step; ours and
    the plain loop leave their last images in ``final``."""

    def __init__(
        self, content: Path, style: Path, size: int, warmup: int, steps: int, seed: int, standard: bool
    ) -> None:
        self.warmup, self.steps, self.seed = warmup, steps, seed
        self.cfg = make_cfg(content, style, size, steps, f"seed={seed}")
        self.plan = adapter.plan_of(self.cfg)
        self.objective, self.init = adapter.objective_of(self.plan, DEVICE)  # the run's, built the same way
        self.final: dict[str, torch.Tensor] = {}
        self.paper = paper_loss(content, style, size) if standard else None

    def ours(self) -> Timing:
        r = clock.ours(self.cfg, self.warmup)
        self.final["ours"] = r.images[r.steps]
        return r.seconds

    def plain(self) -> Timing:
        adapter.configure_device(self.plan)  # the CUDA settings our run uses
        seconds, self.final["plain"] = clock.stamped(
            lambda on_step: plain_style_transfer(self.objective, self.init, self.plan, self.steps, on_step),
            self.warmup,
        )
        return seconds

    def network_only(self) -> Timing:
        adapter.configure_device(self.plan)
        network = adapter.objective_network(self.objective)
        return clock.stamped(lambda on_step: network_only(network, self.init, self.steps, on_step), self.warmup)[0]

    def standard(self) -> Timing:
        def run(on_step: Callable[[int], None]) -> Any:
            shape = tuple(self.init.shape)
            return standard_style_transfer(self.paper, shape, self.steps, self.seed, (), on_step, DEVICE)

        return with_cuda_flags(STANDARD_CUDA_FLAGS, lambda: clock.stamped(run, self.warmup))[0]

    def by_name(self) -> dict[str, Callable[[], Timing]]:
        return {"ours": self.ours, "plain": self.plain, "network_only": self.network_only, "standard": self.standard}


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
    runs = Contenders(content, style, size, warmup, steps, seed, standard="standard" in contenders)
    log(f"speed {size} px: {pairs} x ({', '.join(contenders)}), {steps} steps each")
    times = clock.alternate({name: runs.by_name()[name] for name in contenders}, pairs, deadline)
    result = speed_result(times, runs, timed, contenders)
    log(speed_line(result, contenders))
    return result


def speed_result(
    times: dict[str, list[Timing]], runs: Contenders, timed: int, contenders: tuple[str, ...]
) -> dict[str, Any]:
    wall, cpu = clock.medians(times, "wall"), clock.medians(times, "cpu")
    result: dict[str, Any] = {
        "image": list(runs.init.shape[-2:]),
        "steps_timed": timed,
        "seconds_per_step": wall,
        "cpu_seconds_per_step": cpu,
        "trials": times,
    }
    if "plain" in contenders:
        pair_ratios = [a["wall"] / b["wall"] for a, b in zip(times["ours"], times["plain"], strict=True)]
        losses = {k: objective_loss(runs.objective, v)[0] for k, v in runs.final.items()}  # plan precision: 32-true
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
    return result


def speed_line(result: dict[str, Any], contenders: tuple[str, ...]) -> str:
    wall, pairs = result["seconds_per_step"], result.get("pair_ratios")
    return (
        "  s/step: "
        + ", ".join(f"{name} {wall[name]:.4f}" for name in contenders)
        + "; ours / "
        + ", ".join(f"{name} {result[key]:.3f}" for name, key in RATIOS if key in result)
        + (f" (ours/plain pairs {min(pairs):.3f}..{max(pairs):.3f})" if pairs is not None else "")
    )


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    return {
        str(size): speed_at(
            size,
            s.overhead_warmup,
            s.overhead_steps[size],
            s.overhead_pairs[size],
            inputs.content,
            inputs.style,
            s.seed,
        )
        for size in s.overhead_sizes
    }


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "overhead_ratio": {k: v["ratio"] for k, v in details.items()},
        "network_only_ratio": {k: v["network_only_ratio"] for k, v in details.items()},
    }


def rows(results: dict[str, Any]) -> list[Row]:
    by_size = results["details"].get("overhead", {})
    overhead = [
        (
            f"overhead {size} px (s/step)",
            f"{r['seconds_per_step']['ours']:.3f}",
            f"{r['seconds_per_step']['plain']:.3f}",
            f"{r['ratio']:.3f}",
            "ours / plain loop; target <= 1.03 at >= 256 px",
        )
        for size, r in by_size.items()
    ]
    network = [
        (
            f"network only {size} px (s/step)",
            f"{r['seconds_per_step']['ours']:.4f}",
            f"{r['seconds_per_step']['network_only']:.4f}",
            f"{r['network_only_ratio']:.3f}",
            "ours / forward+backward of the network alone: the limit is 1",
        )
        for size, r in by_size.items()
    ]
    return overhead + network
