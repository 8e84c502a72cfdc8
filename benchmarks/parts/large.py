"""A large image under the defaults, and what a bfloat16 L-BFGS history costs in loss.

- large: ``tiles_large_size`` with the defaults (engine.tile=auto: the memory plan chooses the tiles and, where even
  the smallest leave the history too large, its length), 2 steps;
- least: ``tiles_memory_size`` in ``tiles_least_tile`` px tiles with a bfloat16 history, 2 steps;
- history: ``tiles_history_steps`` steps from the same start with the history in float32 and in bfloat16.
"""

from __future__ import annotations

from typing import Any

from common import Inputs, Row, Settings, log

from parts import tiles


def _large(s: Settings, inputs: Inputs) -> dict[str, Any]:
    size = s.tiles_large_size
    log(f"tiles, large: {size} px, 2 steps, the defaults (engine.tile=auto)")
    return {"size": size, "auto": tiles.one(inputs, "large", size, 2)}


def _history(s: Settings, inputs: Inputs) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": s.tiles_history_steps, "sizes": {}}
    for size in s.tiles_history_sizes:
        log(f"L-BFGS history in float32 and in bfloat16: {size} px, {s.tiles_history_steps} steps")
        fp32 = tiles.one(inputs, f"history_fp32_{size}", size, s.tiles_history_steps, "engine.tile=null")
        bf16 = tiles.one(
            inputs,
            f"history_bf16_{size}",
            size,
            s.tiles_history_steps,
            "engine.tile=null",
            "optimizer.history_dtype=bfloat16",
        )
        out["sizes"][str(size)] = {
            "float32": fp32,
            "bfloat16": bf16,
            "loss_ratio": bf16["loss_total"] / fp32["loss_total"],
        }
        log(f"  final loss bfloat16 / float32 history: {out['sizes'][str(size)]['loss_ratio']:.4f}")
    return out


def _least(s: Settings, inputs: Inputs) -> dict[str, Any]:
    size, tile = s.tiles_memory_size, s.tiles_least_tile
    log(f"the least memory: {size} px, 2 steps, {tile} px tiles and a bfloat16 history")
    extra = (f"engine.tile={tile}", "optimizer.history_dtype=bfloat16")
    return {"size": size, "tile": tile, "run": tiles.one(inputs, "least", size, 2, *extra)}


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    return {"large": _large(s, inputs), "least": _least(s, inputs), "history": _history(s, inputs)}


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"large_peak_mb": details["large"]["auto"]["peak_rss_mb"]} if "large" in details else {}


def rows(results: dict[str, Any]) -> list[Row]:
    t = results["details"].get("large") or {}
    out: list[Row] = []
    if "large" in t:
        large = t["large"]["auto"]
        out.append(
            (
                f"{t['large']['size']} px, the defaults (tile {large['tile']})",
                f"{large['seconds_per_step']:.0f} s/step",
                f"{large['peak_rss_mb']:.0f} MB",
                "-",
                "2 steps completed on this machine",
            )
        )
    if "least" in t:
        least = t["least"]
        out.append(
            (
                f"peak RSS {least['size']} px, {least['tile']} px tiles and a bf16 history (MB)",
                f"{least['run']['peak_rss_mb']:.0f}",
                "-",
                "-",
                "2 steps; target tiled <= 6 GB",
            )
        )
    for size, h in t.get("history", {}).get("sizes", {}).items():
        out.append(
            (
                f"bf16 / fp32 L-BFGS history, loss after {t['history']['steps']} steps at {size} px",
                f"{h['bfloat16']['loss_total']:.4g}",
                f"{h['float32']['loss_total']:.4g}",
                f"{h['loss_ratio']:.4f}",
                "the same start; half the history's memory",
            )
        )
    return out
