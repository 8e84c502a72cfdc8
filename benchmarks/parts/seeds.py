"""The standard comparison (parts/standard.py) from several white-noise starts: whether ours ends above or below
the standard after the checkpoints' steps is the start's luck or a bias of the optimiser."""

from __future__ import annotations

import statistics
from typing import Any

from common import Inputs, Row, Settings

from parts.standard import standard_at


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in s.seeds_sizes:
        runs = {
            str(seed): standard_at(
                size, s.standard_checkpoints, s.standard_warmup, 1, inputs.content, inputs.style, seed
            )
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


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"standard_loss_ratio_seeds": {k: v["loss_ratio"] for k, v in details.items()}}


def rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for size, r in results["details"].get("seeds", {}).items():
        for n, by_seed in r["loss_ratio"].items():
            ratios = list(by_seed.values())
            out.append(
                (
                    f"standard {size} px, loss after {n}, {len(ratios)} seeds",
                    f"{min(ratios):.4f}",
                    f"{max(ratios):.4f}",
                    f"{statistics.geometric_mean(ratios):.4f}",
                    "ours / standard: lowest, highest, geometric mean; per seed "
                    + ", ".join(f"{seed}: {x:.4f}" for seed, x in by_seed.items()),
                )
            )
    return out
