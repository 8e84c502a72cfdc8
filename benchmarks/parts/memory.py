"""Memory: the peak RSS of a fresh `python -m nst_lightning` process per size and precision, next to the estimate of
nst_lightning.engine.memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import adapter
from common import NATIVE_BF16, Inputs, Row, Settings, child, log, ours_args
from PIL import Image


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    peak: dict[str, dict[str, float | None]] = {"fp32": {}, "bf16": {}}
    estimate: dict[str, dict[str, float]] = {"fp32": {}, "bf16": {}}
    steps: dict[str, int] = {"fp32": s.memory_steps, "bf16": s.memory_steps if NATIVE_BF16 else 1}
    skipped: dict[str, str] = {}
    content, style, folder = inputs.content, inputs.style, inputs.folder
    w, h = Image.open(content).size
    for size in s.memory_sizes:
        for name, precision in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
            shape = (round(h * size / max(w, h)), round(w * size / max(w, h)))
            estimate[name][str(size)] = (
                adapter.estimate_peak_bytes(*shape, steps=steps[name], precision=precision) / 2**20
            )
            if name == "bf16" and not NATIVE_BF16 and size > s.memory_bf16_max_size:
                peak[name][str(size)] = None
                skipped[f"{name}/{size}"] = (
                    "no native bf16 on this CPU: one step takes tens of minutes; see the estimate"
                )
                continue
            args = ours_args(size, content, style, Path("x"), folder / f"memory_{name}_{size}", steps[name])
            args = [a for a in args if not a.startswith(("init=", "init.path="))]  # the default start: white noise
            peak[name][str(size)] = child(
                "nst_lightning", [*args, f"trainer.precision={precision}"], folder
            ).peak_rss_mb
            measured, estimated = peak[name][str(size)], estimate[name][str(size)]
            log(f"memory {name} {size} px: peak RSS {measured:.0f} MB, estimate {estimated:.0f} MB")
    return {"peak_rss_mb": peak, "estimate_mb": estimate, "steps": steps, "skipped": skipped}


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"peak_rss_mb": details["peak_rss_mb"]}


def rows(results: dict[str, Any]) -> list[Row]:
    peaks = results.get("peak_rss_mb", {})
    out: list[Row] = []
    for precision in sorted(peaks, key=lambda p: p != "fp32"):  # fp32 first, sizes ascending (JSON sorts keys)
        for size, mb in sorted(peaks[precision].items(), key=lambda item: int(item[0])):
            est = results["details"]["memory"]["estimate_mb"][precision][size]
            out.append(
                (
                    f"peak RSS {precision} {size} px (MB)",
                    "-" if mb is None else f"{mb:.0f}",
                    f"{est:.0f}",
                    "-" if mb is None else f"{est / mb:.3f}",
                    "measured, estimate; estimate / measured",
                )
            )
    return out
