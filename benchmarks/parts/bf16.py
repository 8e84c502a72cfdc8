"""Mixed precision: trainer.precision=bf16-mixed vs 32-true at equal steps: time per step, and the final images'
losses by the float32 objective."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import clock
import torch
from clock import Timing
from common import NATIVE_BF16, Inputs, Row, Settings, evaluator, log, make_cfg
from plain_loop import objective_loss


def precision_pair(
    size: int, warmup: int, timed: int, pairs: int, content: Path, style: Path, seed: int, deadline: float | None = None
) -> dict[str, Any]:
    """32-true vs bf16-mixed runs of ``warmup + timed`` steps: time per step, and the final images' losses by the
    float32 objective."""
    steps = warmup + timed
    final: dict[str, torch.Tensor] = {}

    def contender(precision: str) -> Callable[[], Timing]:
        def run() -> Timing:
            cfg = make_cfg(content, style, size, steps, f"seed={seed}", f"trainer.precision={precision}")
            r = clock.ours(cfg, warmup)
            final[precision] = r.images[r.steps]
            return r.seconds

        return run

    log(f"bf16: {pairs} x (32-true, bf16-mixed), {size} px, {steps} steps (native bf16: {NATIVE_BF16})")
    times = clock.alternate({"32-true": contender("32-true"), "bf16-mixed": contender("bf16-mixed")}, pairs, deadline)
    evaluate = evaluator(make_cfg(content, style, size, steps, f"seed={seed}"))
    losses = {k: objective_loss(evaluate, v)[0] for k, v in final.items()}
    wall = clock.medians(times)
    speedup = wall["32-true"] / wall["bf16-mixed"]
    log(
        f"  32-true {wall['32-true']:.4f} s/step, bf16 {wall['bf16-mixed']:.4f} s/step, "
        f"speed-up {speedup:.3f}; final loss fp32 {losses['32-true']:.4g}, bf16 {losses['bf16-mixed']:.4g}"
    )
    return {
        "size": size,
        "steps": steps,
        "native_bf16": NATIVE_BF16,
        "seconds_per_step": wall,
        "cpu_seconds_per_step": clock.medians(times, "cpu"),
        "trials": times,
        "final_loss_fp32_eval": losses,
        "speedup": speedup,
        "loss_rel_diff": abs(losses["bf16-mixed"] - losses["32-true"]) / losses["32-true"],
    }


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    size = s.bf16_size_native if NATIVE_BF16 else s.bf16_size
    return precision_pair(size, s.bf16_warmup, s.bf16_steps, s.bf16_pairs, inputs.content, inputs.style, s.seed)


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"bf16_speedup": details["speedup"], "bf16_loss_rel_diff": details["loss_rel_diff"]}


def rows(results: dict[str, Any]) -> list[Row]:
    if "bf16" not in results["details"]:
        return []
    b = results["details"]["bf16"]
    sps, loss = b["seconds_per_step"], b["final_loss_fp32_eval"]
    return [
        (
            f"bf16 speed-up {b['size']} px (s/step)",
            f"{sps['bf16-mixed']:.3f}",
            f"{sps['32-true']:.3f}",
            f"{b['speedup']:.3f}",
            "fp32 time / bf16 time; target >= 1.8",
        ),
        (
            f"bf16 final loss, {b['steps']} steps",
            f"{loss['bf16-mixed']:.4g}",
            f"{loss['32-true']:.4g}",
            f"{b['loss_rel_diff']:.4f}",
            "|bf16 - fp32| / fp32; target <= 0.02",
        ),
    ]
