"""Peer: pastiche 1.6.0, through its command line (a subprocess), vs ours as a subprocess, on the same objective.

pastiche minimises  sum_c cw * clw * mse(F, P)  +  sum_l slw_l * mse(G/M, A/M)  on BGR 0-255 pixels, with
L-BFGS(max_iter=1, lr=1), one step per evaluation: our algorithm. mse averages over N*M entries
(content) and N*N entries (Gram). Our L = alpha/2 sum (F-P)^2 + beta sum_l w_l/(4 N^2) sum (G/M - A/M)^2.
So with  slw_l = beta * w_l  and  cw * clw = 2 alpha N M  (N = 512, M = positions at conv4_2), pastiche's
objective is exactly 4 x ours. Layers: our conv4_2 (rectified) is its block4_relu2, convN_1 its blockN_relu1.
Both start from the same white-noise PNG (its --init, our init=image) and see the same pre-resized images;
both use average pooling (its --pooling avg; its default is max) and the same VGG19 weight file.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import adapter
from common import (
    ALPHA,
    BETA,
    DEVICE,
    PAPER_EXACT,
    STYLE_WEIGHTS,
    Child,
    Inputs,
    Row,
    Settings,
    child,
    evaluator,
    log,
    make_cfg,
    ours_args,
)
from PIL import Image
from plain_loop import objective_loss

Runs = dict[str, dict[int, list[Child]]]  # contender -> steps -> its processes, one per repeat

MAPPING = {
    "content_layers": "block4_relu2 (our conv4_2)",
    "style_layers": "block1_relu1 ... block5_relu1 (our conv1_1 ... conv5_1)",
    "style_layer_weights": "beta * w_l = 0.2 each",
    "content_weight": "2 alpha N M, content_layer_weights 1 (pastiche objective = 4 x ours)",
    "pooling": "avg",
    "init": "the same white-noise PNG (pastiche --init, ours init=image)",
    "images": "pre-resized PNGs, --size/--style-size equal to their long sides (no resampling)",
}


def pastiche_args(size: int, content: Path, style: Path, init: Path, out: Path, steps: int) -> list[str]:
    h, w = Image.open(content).size[::-1]
    m = (h // 8) * (w // 8)  # positions of conv4_2: three 2x2 poolings
    style_layers = [f"block{name[4]}_relu1" for name in STYLE_WEIGHTS]
    return [
        *("--device", DEVICE, "--seed", "0", "--pooling", "avg", "--optimizer", "lbfgs"),
        *("--num-steps", str(steps), "--info-step", str(steps)),
        *("--content-layers", "block4_relu2", "--content-layer-weights", "1"),
        *("--content-weight", repr(2 * ALPHA * 512 * m)),
        *("--style-layers", *style_layers, "--style-layer-weights", *[repr(BETA * w) for w in STYLE_WEIGHTS.values()]),
        *("--size", str(size), "--style-size", str(size), "--init", str(init)),
        *("--content", str(content), "--styles", str(style), "--output", str(out)),
    ]


def common_inputs(s: Settings, inputs: Inputs) -> tuple[Path, Path, Path]:
    """(content, style, start) PNGs at the part's size, for both: our white noise, 8-bit."""
    folder = inputs.folder
    content, style, init = folder / "content.png", folder / "style.png", folder / "noise.png"
    c = adapter.load_image(str(inputs.content), s.pastiche_size)
    st = adapter.load_image(str(inputs.style), s.pastiche_size)
    adapter.save_png(c, content)
    adapter.save_png(st, style)
    adapter.save_png(adapter.white_noise(tuple(c.shape), s.seed), init)
    return content, style, init


def run_both(s: Settings, content: Path, style: Path, init: Path, folder: Path) -> tuple[Runs, dict[str, Path]]:
    """Ours then pastiche, at the long then the short step count, ``pastiche_pairs`` times: the processes, and
    each contender's first result image."""
    size, (short, long) = s.pastiche_size, s.pastiche_steps
    runs: Runs = {"ours": {short: [], long: []}, "pastiche": {short: [], long: []}}
    outputs: dict[str, Path] = {}
    log(f"pastiche: {s.pastiche_pairs} x (ours, pastiche) at {long} then {short} steps, {size} px, subprocesses")
    for rep in range(s.pastiche_pairs):
        for steps in (long, short):
            out_dir = folder / f"ours_{steps}_{rep}"
            ran = child("nst_lightning", [*ours_args(size, content, style, init, out_dir, steps)], folder)
            runs["ours"][steps].append(ran)
            outputs.setdefault("ours", out_dir / "result.png")
            out = folder / f"pastiche_{steps}_{rep}.png"
            ran = child("pastiche", [*pastiche_args(size, content, style, init, out, steps)], folder)
            runs["pastiche"][steps].append(ran)
            outputs.setdefault("pastiche", out)
            log(f"  {steps} steps: ours {runs['ours'][steps][-1].wall:.1f} s, pastiche {ran.wall:.1f} s (wall clock)")
    return runs, outputs


def per_step_of(runs: Runs, name: str, which: str, short: int, long: int) -> float:
    """Seconds (``which``: "wall" or "cpu") per step from the difference of two step counts: start-up cancels."""
    r = runs[name]
    return statistics.median(
        (getattr(a, which) - getattr(b, which)) / (long - short) for a, b in zip(r[long], r[short], strict=True)
    )


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    short, long = s.pastiche_steps
    content, style, init = common_inputs(s, inputs)
    runs, outputs = run_both(s, content, style, init, inputs.folder)
    per_step_s = {name: per_step_of(runs, name, "wall", short, long) for name in runs}
    cpu_per_step = {name: per_step_of(runs, name, "cpu", short, long) for name in runs}
    c = adapter.load_image(str(content), None)
    evaluate = evaluator(make_cfg(content, style, max(c.shape[-2:]), long, PAPER_EXACT))  # the PNGs, not resized

    def loss_of(png: Path) -> float:
        return objective_loss(evaluate, adapter.load_image(str(png), None))[0]

    losses = {name: loss_of(png) for name, png in outputs.items()}
    start = re.search(r"^0\s+[\d.]+\s+([\d.eE+-]+)\s*$", runs["pastiche"][long][0].output, re.MULTILINE)
    objective_check = float(start.group(1)) / (4 * loss_of(init)) if start else None
    result = {
        "size": list(c.shape[-2:]),
        "steps": long,
        "steps_short": short,
        "seconds_per_step": per_step_s,
        "cpu_seconds_per_step": cpu_per_step,
        "wall_clock_s": {name: {n: [c.wall for c in cs] for n, cs in r.items()} for name, r in runs.items()},
        "final_loss_our_eval": losses,
        "step_ratio": per_step_s["ours"] / per_step_s["pastiche"],
        "cpu_step_ratio": cpu_per_step["ours"] / cpu_per_step["pastiche"],
        "loss_ratio": losses["ours"] / losses["pastiche"],
        "objective_check": objective_check,  # pastiche's step-0 loss / (4 x ours) on the same image: 1 = same objective
        "mapping": MAPPING,
    }
    log(
        f"  ours {per_step_s['ours']:.3f} s/step, pastiche {per_step_s['pastiche']:.3f} s/step, "
        f"ratio {result['step_ratio']:.3f}; loss ratio {result['loss_ratio']:.4f}; objective check {objective_check}"
    )
    return result


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {"pastiche_step_ratio": details["step_ratio"], "pastiche_loss_ratio": details["loss_ratio"]}


def rows(results: dict[str, Any]) -> list[Row]:
    if "pastiche" not in results["details"]:
        return []
    p = results["details"]["pastiche"]
    sps, loss = p["seconds_per_step"], p["final_loss_our_eval"]
    return [
        (
            f"pastiche {p['size'][1]} px (s/step)",
            f"{sps['ours']:.3f}",
            f"{sps['pastiche']:.3f}",
            f"{p['step_ratio']:.3f}",
            "ours / pastiche; < 1 better",
        ),
        (
            f"pastiche final loss, {p['steps']} steps",
            f"{loss['ours']:.4g}",
            f"{loss['pastiche']:.4g}",
            f"{p['loss_ratio']:.4f}",
            "ours / pastiche, our loss; < 1 better",
        ),
    ]
