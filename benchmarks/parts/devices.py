"""Several devices: 2 processes (Lightning's ddp; gloo on a CPU, NCCL on GPUs) against 1, side by side.

Each run is a fresh `python -m nst_lightning` (its seconds per step from rank 0's metrics.json), alternated 1, 2,
1, 2, ... so that a slow minute hits both alike:
- batch: a batched sweep of ``devices_batch_images`` images at ``devices_batch_size`` px, the images split across
  the processes (images/s = images / s per step);
- tiled: one image at ``devices_tiled_size`` px in tiles of ``devices_tile`` px, the tiles split across them.

On a CPU the processes share its cores (Lightning gives each 1/N of the threads), so 2 processes can only win
what one process's threads leave idle; on N GPUs each process has a device of its own.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from common import Inputs, Row, Settings, child, log

from parts import tiles


def _args(inputs: Inputs, folder: Path, size: int, steps: int, devices: int, *extra: str) -> list[str]:
    return tiles.run_args(inputs, size, steps, folder, f"trainer.devices={devices}", *extra)


def _one(inputs: Inputs, name: str, size: int, steps: int, devices: int, *extra: str) -> dict[str, Any]:
    folder = inputs.folder / f"devices_{name}"
    ran = child("nst_lightning", _args(inputs, folder, size, steps, devices, *extra), inputs.folder)
    summary = json.loads((folder / "metrics.json").read_text())
    images = list(summary["batch"].values()) if "batch" in summary else [summary]
    out = {
        "devices": devices,
        "seconds_per_step": images[0]["seconds_per_step"],
        "loss_total": [m["loss_total"] for m in images],
        "wall_s": ran.wall,
    }
    log(f"  {name}: {out['seconds_per_step']:.3f} s/step, wall {ran.wall:.1f} s")
    return out


def _compare(s: Settings, inputs: Inputs, kind: str, size: int, *extra: str) -> dict[str, Any]:
    rounds = [
        tuple(
            _one(inputs, f"{kind}_{devices}_{i}", size, s.devices_steps, devices, *extra)
            for devices in (1, s.devices_count)
        )
        for i in range(s.devices_pairs)
    ]
    one = statistics.median(a["seconds_per_step"] for a, _ in rounds)
    many = statistics.median(b["seconds_per_step"] for _, b in rounds)
    apart = max(abs(y / x - 1) for a, b in rounds for x, y in zip(a["loss_total"], b["loss_total"], strict=True))
    log(f"  {s.devices_count} processes / 1: {many / one:.3f} s/step; final losses {apart:.1e} apart")
    return {"size": size, "rounds": rounds, "one_s": one, "many_s": many, "ratio": many / one, "loss_rel_diff": apart}


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    k, n = s.devices_batch_images, s.devices_count
    log(f"devices, batch: K={k} at {s.devices_batch_size} px on 1 and {n} processes, {s.devices_steps} steps")
    ratios = ",".join(f"{10.0 ** -(i + 1):g}" for i in range(k))
    batch = _compare(s, inputs, "batch", s.devices_batch_size, f"batch_sweep.ratio=[{ratios}]")
    batch["images"] = k
    log(f"devices, tiled: {s.devices_tiled_size} px in {s.devices_tile} px tiles on 1 and {n} processes")
    tiled = _compare(s, inputs, "tiled", s.devices_tiled_size, f"engine.tile={s.devices_tile}")
    tiled["tile"] = s.devices_tile
    return {"devices": n, "batch": batch, "tiled": tiled}


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"devices_batch_ratio": details["batch"]["ratio"], "devices_tiled_ratio": details["tiled"]["ratio"]}


def rows(results: dict[str, Any]) -> list[Row]:
    d = results["details"].get("devices")
    if not d:
        return []
    b, t, n = d["batch"], d["tiled"], d["devices"]
    return [
        (
            f"batch K={b['images']} {b['size']} px, {n} processes vs 1, s/step",
            f"{b['many_s']:.3f}",
            f"{b['one_s']:.3f}",
            f"{b['ratio']:.3f}",
            f"{b['images'] / b['many_s']:.2f} vs {b['images'] / b['one_s']:.2f} images/s; "
            f"losses {b['loss_rel_diff']:.0e} apart",
        ),
        (
            f"one image {t['size']} px in {t['tile']} px tiles, {n} processes vs 1, s/step",
            f"{t['many_s']:.3f}",
            f"{t['one_s']:.3f}",
            f"{t['ratio']:.3f}",
            f"{n} / 1 processes; losses {t['loss_rel_diff']:.0e} apart",
        ),
    ]
