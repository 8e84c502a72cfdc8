"""The stall case: white noise, a high-contrast striped style, 64 px: how far each optimiser brings the loss.

torch.optim.LBFGS on L / L_0 (plain_loop.scaled_torch_lbfgs) crawls here; ours must divide the loss by
``stall_target`` (100) in ``stall_steps`` (100). Fall = L(start) / L(after the steps), each measured by the
objective that run minimised, in float32; the main comparison on the paper's exact objective.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import adapter
import clock
import numpy as np
from common import (
    DEVICE,
    PAPER_EXACT,
    STANDARD_CUDA_FLAGS,
    Inputs,
    Row,
    Settings,
    log,
    make_cfg,
    paper_loss,
    with_cuda_flags,
)
from PIL import Image
from plain_loop import objective_loss, scaled_torch_lbfgs
from standard import standard_style_transfer

STYLES = {
    "bw4": "black and white vertical stripes, 4 px wide",
    "redblue2": "saturated red and blue vertical stripes, 2 px wide (tests/optim/test_lbfgs.py's stall pattern)",
}


def stall_images(folder: Path, size: int, pattern: str = "bw4") -> tuple[Path, Path]:
    """The stall case's inputs, ``size`` px square: a smooth synthetic 'photo' (sky gradient, a disc) and a
    saturated high-contrast striped style (STYLES)."""
    y, x = np.mgrid[0:size, 0:size] / size
    photo = np.stack([0.3 + 0.5 * y, 0.5 + 0.3 * x, 0.9 - 0.4 * y], -1)
    photo[(x - 0.6) ** 2 + (y - 0.35) ** 2 < 0.04] = (1.0, 0.85, 0.2)
    column = np.arange(size)
    stripes = np.zeros((size, size, 3))
    if pattern == "bw4":
        stripes[:, (column // 4) % 2 == 0, :] = 1.0
    elif pattern == "redblue2":
        stripes[:, column % 4 < 2, 0] = 1.0
        stripes[:, column % 4 >= 2, 2] = 1.0
    else:
        raise ValueError(f"unknown stall style {pattern!r}: one of {', '.join(STYLES)}")
    content, style = folder / f"stall_photo_{size}.png", folder / f"stall_{pattern}_{size}.png"
    Image.fromarray((photo * 255).round().astype(np.uint8)).save(content)
    Image.fromarray((stripes * 255).astype(np.uint8)).save(style)
    return content, style


def fall(start: float, end: float) -> dict[str, float]:
    return {"start_loss": start, "end_loss": end, "fall": start / end}


def stall_case(s: Settings, folder: Path, pattern: str) -> dict[str, Any]:
    size, steps = s.stall_size, s.stall_steps
    content, style = stall_images(folder, size, pattern)
    log(f"stall: {size} px, white noise, {STYLES[pattern]} as the style, {steps} steps")
    out: dict[str, Any] = {"style": STYLES[pattern]}
    for name, overrides, recipe in (("ours", (PAPER_EXACT,), "paper"), ("ours_product_default", (), None)):
        cfg = make_cfg(content, style, size, steps, f"seed={s.seed}", *overrides, recipe=recipe)
        evaluate, start = adapter.objective_of(adapter.plan_of(cfg), DEVICE, precision="32-true")
        r = clock.ours(cfg, 1)
        out[name] = fall(objective_loss(evaluate, start)[0], objective_loss(evaluate, r.images[r.steps])[0])
    cfg = make_cfg(content, style, size, steps, f"seed={s.seed}", PAPER_EXACT)
    evaluate, start = adapter.objective_of(adapter.plan_of(cfg), DEVICE, precision="32-true")
    paper = paper_loss(content, style, size)
    shape = tuple(start.shape)
    kept = with_cuda_flags(
        STANDARD_CUDA_FLAGS, lambda: standard_style_transfer(paper, shape, steps, s.seed, (), device=DEVICE)
    )
    out["standard"] = fall(objective_loss(evaluate, start)[0], objective_loss(evaluate, kept[steps])[0])
    scaled = scaled_torch_lbfgs(evaluate, start, steps)
    out["scaled_torch_lbfgs"] = fall(objective_loss(evaluate, start)[0], objective_loss(evaluate, scaled)[0])
    out["met"] = out["ours"]["fall"] >= s.stall_target
    log(
        "  loss divided by: "
        + ", ".join(f"{k} {out[k]['fall']:.4g}" for k in ("ours", "ours_product_default", "standard"))
        + f", torch.optim.LBFGS on L/L_0 {out['scaled_torch_lbfgs']['fall']:.4g} (target ours >= {s.stall_target:g})"
    )
    return out


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    """Each of ``s.stall_styles``; the first one's ours and standard are the headline (``stall_fall``)."""
    styles = {pattern: stall_case(s, inputs.folder, pattern) for pattern in s.stall_styles}
    first = styles[s.stall_styles[0]]
    return {
        "size": s.stall_size,
        "steps": s.stall_steps,
        "target": s.stall_target,
        "headline_style": s.stall_styles[0],
        "ours": first["ours"],
        "standard": first["standard"],
        "met": first["met"],
        "styles": styles,
    }


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"stall_fall": {k: details[k]["fall"] for k in ("ours", "standard")}}


def rows(results: dict[str, Any]) -> list[Row]:
    if "stall" not in results["details"]:
        return []
    st = results["details"]["stall"]
    return [
        (
            f"stall {pattern} {st['size']} px, {st['steps']} steps (fall)",
            f"{case['ours']['fall']:.4g}",
            f"{case['standard']['fall']:.4g}",
            f"{case['ours']['fall'] / case['standard']['fall']:.4g}",
            f"L(start) / L(end), ours vs standard; target ours >= {st['target']:g} "
            f"(torch LBFGS on L/L_0: {case['scaled_torch_lbfgs']['fall']:.3g})",
        )
        for pattern, case in st.get("styles", {"": st}).items()
    ]
