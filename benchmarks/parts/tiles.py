"""Exact tiles: what they cost in time and save in memory, and what a bfloat16 L-BFGS history costs in loss.

Each run is a fresh `python -m nst_lightning` with the product's defaults (its peak RSS read from the child, its
seconds per step from its metrics.json), side by side in one benchmark run:
- speed: untiled and tiled at ``tiles_speed_size`` (tiles of ``tiles_speed_tile`` px), alternated;
- memory: ``tiles_memory_size`` untiled, tiled, and tiled with a bfloat16 history, 2 steps each;
(the part ``large`` runs a large image under the defaults and compares the L-BFGS history's dtypes).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from common import DEVICE, Inputs, Row, Settings, child, log


def run_args(inputs: Inputs, size: int, steps: int, folder: Path, *extra: str) -> list[str]:
    """A benchmark run's command line: the product's defaults, nothing written but the result and metrics.json."""
    return [
        f"content={inputs.content}",
        f"style={inputs.style}",
        f"size={size}",
        f"steps={steps}",
        "snapshot_every=0",
        "metrics=false",
        "trainer.enable_progress_bar=false",
        f"trainer.accelerator={'gpu' if DEVICE == 'cuda' else 'cpu'}",
        f"hydra.run.dir={folder}",
        *extra,
    ]


def one(inputs: Inputs, name: str, size: int, steps: int, *extra: str) -> dict[str, Any]:
    folder = inputs.folder / f"tiles_{name}"
    ran = child("nst_lightning", run_args(inputs, size, steps, folder, *extra), inputs.folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    record = (folder / ".hydra" / "config.yaml").read_text()
    tile = next((line.split(":", 1)[1].strip() for line in record.splitlines() if line.startswith("  tile:")), None)
    out = {
        "peak_rss_mb": ran.peak_rss_mb,
        "seconds_per_step": metrics["seconds_per_step"],
        "loss_total": metrics["loss_total"],
        "tile": tile,
        "wall_s": ran.wall,
    }
    speed, peak = out["seconds_per_step"], out["peak_rss_mb"]
    log(f"  {name}: {speed:.2f} s/step, peak {peak:.0f} MB, loss {out['loss_total']:.4g}, tile {tile}")
    return out


def _speed(s: Settings, inputs: Inputs) -> dict[str, Any]:
    size, tile, steps = s.tiles_speed_size, s.tiles_speed_tile, s.tiles_speed_steps
    log(f"tiles, speed: {size} px untiled and in {tile} px tiles, {steps} steps, {s.tiles_speed_pairs} rounds")
    rounds = [
        (
            one(inputs, f"whole_{i}", size, steps, "engine.tile=null"),
            one(inputs, f"tiled_{i}", size, steps, f"engine.tile={tile}"),
        )
        for i in range(s.tiles_speed_pairs)
    ]
    ratio = statistics.median(b["seconds_per_step"] / a["seconds_per_step"] for a, b in rounds)
    same = max(abs(b["loss_total"] / a["loss_total"] - 1) for a, b in rounds)
    log(f"  tiled / untiled: {ratio:.3f} s/step; final losses {same:.1e} apart")
    return {"size": size, "tile": tile, "steps": steps, "rounds": rounds, "ratio": ratio, "loss_rel_diff": same}


def _memory(s: Settings, inputs: Inputs) -> dict[str, Any]:
    size, tile = s.tiles_memory_size, s.tiles_memory_tile
    log(f"tiles, memory: {size} px, 2 steps: untiled, {tile} px tiles, and those with a bfloat16 history")
    return {
        "size": size,
        "tile": tile,
        "untiled": one(inputs, "memory_whole", size, 2, "engine.tile=null"),
        "tiled": one(inputs, "memory_tiled", size, 2, f"engine.tile={tile}"),
        "tiled_bf16_history": one(
            inputs, "memory_tiled_bf16", size, 2, f"engine.tile={tile}", "optimizer.history_dtype=bfloat16"
        ),
    }


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    return {"speed": _speed(s, inputs), "memory": _memory(s, inputs)}


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"tiles_step_ratio": details["speed"]["ratio"], "tiles_peak_mb": details["memory"]["tiled"]["peak_rss_mb"]}


def rows(results: dict[str, Any]) -> list[Row]:
    t = results["details"].get("tiles")
    if not t:
        return []
    sp, mem = t["speed"], t["memory"]
    out: list[Row] = [
        (
            f"tiles {sp['tile']} px at {sp['size']} px, s/step",
            f"{statistics.median(b['seconds_per_step'] for _, b in sp['rounds']):.2f}",
            f"{statistics.median(a['seconds_per_step'] for a, _ in sp['rounds']):.2f}",
            f"{sp['ratio']:.3f}",
            f"tiled / untiled; target <= 2.0; final losses {sp['loss_rel_diff']:.0e} apart",
        )
    ]
    for key, label in (("tiled", f"{mem['tile']} px tiles"), ("tiled_bf16_history", "and a bf16 history")):
        out.append(
            (
                f"peak RSS {mem['size']} px, {label} (MB)",
                f"{mem[key]['peak_rss_mb']:.0f}",
                f"{mem['untiled']['peak_rss_mb']:.0f}",
                f"{mem[key]['peak_rss_mb'] / mem['untiled']['peak_rss_mb']:.3f}",
                "tiled / untiled, 2 steps; target tiled <= 6 GB",
            )
        )
    return out
