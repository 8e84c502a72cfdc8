"""Coarse to fine: ``scales=[size/2,size]`` vs single scale at ``size`` (features.multiscale)."""

from __future__ import annotations

from typing import Any

import features
from common import Inputs, Row, Settings, log


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    """Time to the single-scale run's final loss, coarse to fine / single scale (target <= 0.5 at 512 px)."""
    size, steps, coarse = s.multiscale_size, s.multiscale_steps, s.multiscale_coarse_steps
    log(f"coarse to fine: {size // 2} px x {coarse} steps then {size} px, vs {size} px x {steps} steps")
    result = features.multiscale(inputs.content, inputs.style, size, steps, coarse, inputs.folder / "multiscale")
    reached = result["fine"]["steps_to_reach"]
    log(
        f"  time ratio {result['time_ratio']:.3f} "
        + (f"(single-scale loss reached after {reached} fine steps)" if result["reached"] else "(not reached)")
    )
    return result


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"multiscale_time_ratio": details["time_ratio"]}


def rows(results: dict[str, Any]) -> list[Row]:
    if "multiscale" not in results["details"]:
        return []
    m = results["details"]["multiscale"]
    return [
        (
            f"coarse to fine {m['size']} px (s)",
            f"{m['time_ratio'] * m['single']['seconds']:.1f}",
            f"{m['single']['seconds']:.1f}",
            f"{m['time_ratio']:.3f}",
            "time to the single-scale loss / single-scale time; target <= 0.5"
            + ("" if m["reached"] else " (not reached)"),
        )
    ]
