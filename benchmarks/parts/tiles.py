"""Exact tiles: what they cost in time and save in memory, and what a bfloat16 L-BFGS history costs in loss.

Each run is a fresh `python -m nst_lightning` with the product's defaults (its peak RSS read from the child, its
seconds per step from its metrics.json), side by side in one benchmark run:
- speed: untiled and tiled at ``tiles_speed_size`` (tiles of ``tiles_speed_tile`` px), alternated;
- memory: ``tiles_memory_size`` untiled, tiled, and tiled with a bfloat16 history, 2 steps each;
- large: ``tiles_large_size`` with engine.tile=auto (the memory plan chooses), 2 steps;
- history: ``tiles_history_steps`` steps from the same start with the history in float32 and in bfloat16.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from common import DEVICE, Inputs, Row, Settings, child, log


def _args(inputs: Inputs, size: int, steps: int, folder: Path, *extra: str) -> list[str]:
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


def _one(inputs: Inputs, name: str, size: int, steps: int, *extra: str) -> dict[str, Any]:
    folder = inputs.folder / f"tiles_{name}"
    ran = child("nst_lightning", _args(inputs, size, steps, folder, *extra), inputs.folder)
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
        (_one(inputs, f"whole_{i}", size, steps), _one(inputs, f"tiled_{i}", size, steps, f"engine.tile={tile}"))
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
        "untiled": _one(inputs, "memory_whole", size, 2),
        "tiled": _one(inputs, "memory_tiled", size, 2, f"engine.tile={tile}"),
        "tiled_bf16_history": _one(
            inputs, "memory_tiled_bf16", size, 2, f"engine.tile={tile}", "optimizer.history_dtype=bfloat16"
        ),
    }


def _large(s: Settings, inputs: Inputs) -> dict[str, Any]:
    size = s.tiles_large_size
    log(f"tiles, large: {size} px, 2 steps, engine.tile=auto")
    return {"size": size, "auto": _one(inputs, "large", size, 2, "engine.tile=auto")}


def _history(s: Settings, inputs: Inputs) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": s.tiles_history_steps, "sizes": {}}
    for size in s.tiles_history_sizes:
        log(f"L-BFGS history in float32 and in bfloat16: {size} px, {s.tiles_history_steps} steps")
        fp32 = _one(inputs, f"history_fp32_{size}", size, s.tiles_history_steps)
        bf16 = _one(inputs, f"history_bf16_{size}", size, s.tiles_history_steps, "optimizer.history_dtype=bfloat16")
        out["sizes"][str(size)] = {
            "float32": fp32,
            "bfloat16": bf16,
            "loss_ratio": bf16["loss_total"] / fp32["loss_total"],
        }
        log(f"  final loss bfloat16 / float32 history: {out['sizes'][str(size)]['loss_ratio']:.4f}")
    return out


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    return {
        "speed": _speed(s, inputs),
        "memory": _memory(s, inputs),
        "large": _large(s, inputs),
        "history": _history(s, inputs),
    }


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"tiles_step_ratio": details["speed"]["ratio"], "tiles_peak_mb": details["memory"]["tiled"]["peak_rss_mb"]}


def rows(results: dict[str, Any]) -> list[Row]:
    t = results["details"].get("tiles")
    if not t:
        return []
    sp, mem, large = t["speed"], t["memory"], t["large"]["auto"]
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
    out.append(
        (
            f"{t['large']['size']} px, engine.tile=auto (tile {large['tile']})",
            f"{large['seconds_per_step']:.0f} s/step",
            f"{large['peak_rss_mb']:.0f} MB",
            "-",
            "2 steps completed on this machine",
        )
    )
    for size, h in t["history"]["sizes"].items():
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
