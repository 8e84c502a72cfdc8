"""A batched sweep: K=4 ratios as one ``batch_sweep`` batch vs 4 sequential runs (features.batched)."""

from __future__ import annotations

import statistics
from typing import Any

import features
from common import Inputs, Row, Settings, log


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    """Images per hour, batched / sequential (target >= 1.3 at 128 px), and the largest difference between batched
    and independent final losses."""
    log(f"batched sweep: {s.batched_repeats} x (batch of 4, 4 runs), {s.batched_size} px, {s.batched_steps} steps")
    result = features.batched(
        inputs.content, inputs.style, s.batched_size, s.batched_steps, s.batched_repeats, inputs.folder / "batched"
    )
    log(f"  {result['speedup']:.3f}x images per hour; largest loss difference {result['max_loss_rel_diff']:.2e}")
    return result


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"batched_speedup": details["speedup"]}


def rows(results: dict[str, Any]) -> list[Row]:
    if "batched" not in results["details"]:
        return []
    b = results["details"]["batched"]
    return [
        (
            f"batched sweep K={b['k']} {b['size']} px (s)",
            f"{statistics.median(b['batch_seconds']):.1f}",
            f"{statistics.median(b['sequential_seconds']):.1f}",
            f"{b['speedup']:.3f}",
            f"sequential / batched time; target >= 1.3; loss diff <= {b['max_loss_rel_diff']:.1e}",
        )
    ]
