"""--gpu: the GPU numbers in one short run, each sub-part on its own time budget.

A lent GPU machine comes for minutes (benchmarks/gpu.sh runs this under `timeout`): each sub-part starts only
within its budget and stops alternating when past it, and the JSON is rewritten after every measurement, so that a
timeout keeps what was measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import clock
import torch
from clock import OursRun, Timing
from common import DEVICE, ROOT, Inputs, cuda_flags, input_images, log, machine, make_cfg

from parts.bf16 import precision_pair
from parts.overhead import speed_at
from parts.setup import process_setup
from parts.standard import standard_at

Put = Callable[[str, Any], None]  # put(key, value): one measurement of a sub-part, saved at once


@dataclass
class GpuSettings:
    setup_size: int = 64  # set-up: a tiny run, in this process and as a fresh `python -m nst_lightning`
    setup_steps: int = 5
    speed_sizes: tuple[int, ...] = (512, 1024)
    speed_warmup: int = 10  # 3 eager steps, the CUDA graph's capture, the first replays
    speed_steps: int = 40
    speed_pairs: int = 2
    bf16_size: int = 1024
    bf16_warmup: int = 10
    bf16_steps: int = 290  # 300 in all: the losses are compared where they settle
    batch_size: int = 512
    batch_k: int = 8  # batch_sweep.seed=[0..K-1]
    batch_warmup: int = 10
    batch_steps: int = 90
    standard_sizes: tuple[int, ...] = (512, 1024)
    standard_checkpoints: tuple[int, ...] = (100, 300)
    standard_warmup: int = 10
    # Seconds per sub-part, in the order they run; the sum plus start-up (~15 s) and the last sub-part's overrun
    # must stay under gpu.sh's timeout for this run (270 s).
    budgets: dict[str, float] = field(
        default_factory=lambda: {
            "setup": 25,
            "speed": 55,
            "bf16": 40,
            "batch": 35,
            "setup_process": 40,
            "standard": 45,
        }
    )
    seed: int = 0


GPU_FULL = GpuSettings()
GPU_QUICK = GpuSettings(
    setup_size=32,
    setup_steps=3,
    speed_sizes=(32, 64),
    speed_warmup=2,
    speed_steps=3,
    speed_pairs=1,
    bf16_size=32,
    bf16_warmup=1,
    bf16_steps=3,
    batch_size=32,
    batch_k=2,
    batch_warmup=1,
    batch_steps=3,
    standard_sizes=(32,),
    standard_checkpoints=(2, 4),
    standard_warmup=1,
    budgets={"setup": 120, "speed": 120, "bf16": 120, "batch": 120, "setup_process": 120, "standard": 120},
)


class GpuReport:
    """The --gpu results, rewritten to ``path`` after every measurement (a temporary file renamed over it: a reader,
    or a kill, never leaves half a file)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data, self.started = path, {**data, "parts": {}}, time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, self.path)

    def run(self, name: str, budget: float, part: Callable[[float, Put], None]) -> None:
        """part(deadline, put): put(key, value) records one measurement of the sub-part and saves."""
        started = time.perf_counter()
        record: dict[str, Any] = {"budget_s": budget, "status": "running"}
        self.data["parts"][name] = record

        def put(key: str, value: Any) -> None:
            record[key] = value
            self.save()

        try:
            part(started + budget, put)
            record["status"] = "done"
        except Exception as exc:  # one sub-part's failure must not cost the others
            record["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            record["traceback"] = traceback.format_exc()[-4000:]
            log(f"{name}: {record['status']}")
        record["seconds"] = time.perf_counter() - started
        self.data["seconds"] = time.perf_counter() - self.started
        self.save()

    def headline(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def measured(self, name: str) -> dict[str, Any]:
        """The sub-part's measurements that are results (not a "skipped: ..." note)."""
        return {k: v for k, v in self.data["parts"][name].items() if isinstance(v, dict)}


def over(deadline: float) -> bool:
    return time.perf_counter() > deadline


# ---- the sub-parts: each part(g, inputs, deadline, put) ----------------------------------------------------------


def gpu_setup(g: GpuSettings, inputs: Inputs, deadline: float, put: Put) -> None:
    """Seconds from the run() call to the end of the first step: this process's first run (its first CUDA kernels
    and cuDNN set-up, the weights decoded) and a second one."""
    cfg = make_cfg(inputs.content, inputs.style, g.setup_size, g.setup_steps, f"seed={g.seed}")
    for label in ("first_in_process", "again_in_process"):
        if over(deadline):
            put(label, "skipped: over budget")
            continue
        r = clock.ours(cfg, 1)
        put(label, {"to_train_start_s": r.to_train_start, "to_first_step_s": r.to_first_step, "run_s": r.wall})
        log(
            f"set-up, {label}: run() to first step {r.to_first_step:.2f} s "
            f"(to the training loop {r.to_train_start:.2f} s)"
        )


def gpu_speed(g: GpuSettings, inputs: Inputs, deadline: float, put: Put) -> None:
    for size in g.speed_sizes:
        if over(deadline):
            put(str(size), "skipped: over budget")
            continue
        contenders = ("ours", "standard", "network_only", "plain")
        c, st = inputs.content, inputs.style
        put(
            str(size), speed_at(size, g.speed_warmup, g.speed_steps, g.speed_pairs, c, st, g.seed, contenders, deadline)
        )


def gpu_bf16(g: GpuSettings, inputs: Inputs, deadline: float, put: Put) -> None:
    c, st = inputs.content, inputs.style
    put("result", precision_pair(g.bf16_size, g.bf16_warmup, g.bf16_steps, 1, c, st, g.seed, deadline))


def gpu_batch(g: GpuSettings, inputs: Inputs, deadline: float, put: Put) -> None:
    """K images as one batch_sweep run (batch_sweep.seed=[0..K-1]) vs one image: images per second, over the steps
    alone (K / (steps x s/step)) and over whole run() calls (set-up included)."""
    k, size, steps = g.batch_k, g.batch_size, g.batch_warmup + g.batch_steps
    seeds = ",".join(str(i) for i in range(k))
    configs = {
        "one": make_cfg(inputs.content, inputs.style, size, steps, f"seed={g.seed}"),
        "batch": make_cfg(inputs.content, inputs.style, size, steps, f"batch_sweep.seed=[{seeds}]"),
    }
    runs: dict[str, OursRun] = {}

    def contender(name: str) -> Callable[[], Timing]:
        def run() -> Timing:
            runs[name] = clock.ours(configs[name], g.batch_warmup)
            return runs[name].seconds

        return run

    log(f"batch: K={k} (batch_sweep.seed=[{seeds}]) vs one image, {size} px, {steps} steps each")
    times = clock.alternate({"one": contender("one"), "batch": contender("batch")}, 1, deadline)
    wall = clock.medians(times)
    images = {"one": 1, "batch": k}
    steps_only = {name: images[name] / (steps * wall[name]) for name in wall}
    whole = {name: images[name] / runs[name].wall for name in runs}
    result = {
        "k": k,
        "size": size,
        "steps": steps,
        "seconds_per_step": wall,
        "images_per_second_steps": steps_only,
        "images_per_second_runs": whole,
        "speedup_steps": steps_only["batch"] / steps_only["one"],
        "speedup_runs": whole["batch"] / whole["one"],
    }
    put("result", result)
    log(
        f"  s/step one {wall['one']:.4f}, batch of {k} {wall['batch']:.4f}; images/s (steps) one "
        f"{steps_only['one']:.3f}, batch {steps_only['batch']:.3f}: x{result['speedup_steps']:.2f}; "
        f"whole runs x{result['speedup_runs']:.2f}"
    )


def gpu_setup_process(g: GpuSettings, inputs: Inputs, deadline: float, put: Put) -> None:
    """A fresh `python -m nst_lightning size=64 steps=5` (snapshot_every=1) to its first step, and the imports alone."""
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", "import nst_lightning.engine.run"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    import_s = time.time() - started if proc.returncode == 0 else None
    put("import_s", import_s if import_s is not None else f"failed: {proc.stderr[-500:]}")
    timeout = max(30.0, deadline - time.perf_counter() + 30)
    result = process_setup(g.setup_size, g.setup_steps, g.seed, inputs.content, inputs.style, inputs.folder, timeout)
    put("process", result)
    log(
        f"set-up, fresh process: start to first step {result['to_first_step_s']:.2f} s "
        f"(to the training loop {result['to_train_start_s']:.2f} s; python -c 'import nst_lightning.engine.run' alone "
        f"{'-' if import_s is None else f'{import_s:.2f}'} s), "
        f"whole process {result['process_s']:.2f} s"
    )


def gpu_standard(g: GpuSettings, inputs: Inputs, deadline: float, put: Put) -> None:
    """Losses of ours and of the standard contender after 100 and 300 steps; a larger size only if the time left
    covers the last size's time scaled by the pixel count (runs of hundreds of steps: no starting one in vain)."""
    last: tuple[int, float] | None = None
    for size in sorted(g.standard_sizes):
        left = deadline - time.perf_counter()
        expected = 0.0 if last is None else last[1] * (size / last[0]) ** 2
        if left <= 0 or expected > left + 15:
            put(str(size), f"skipped: {max(left, 0):.0f} s of the budget left, ~{expected:.0f} s needed")
            continue
        started = time.perf_counter()
        c, st = inputs.content, inputs.style
        put(str(size), standard_at(size, g.standard_checkpoints, g.standard_warmup, 1, c, st, g.seed))
        last = (size, time.perf_counter() - started)


# ---- the run: the sub-parts in turn, each followed by its headline keys ------------------------------------------


def speed_headlines(report: GpuReport) -> None:
    speed = report.measured("speed")
    for key in ("standard_step_ratio", "network_only_ratio", "ratio"):
        headline = {size: r[key] for size, r in speed.items() if key in r}
        report.headline("overhead_ratio" if key == "ratio" else key, headline)
    report.headline("seconds_per_step", {size: r["seconds_per_step"] for size, r in speed.items()})
    report.data["cuda_flags_of_our_runs"] = cuda_flags() if DEVICE == "cuda" else None


def bf16_headlines(report: GpuReport) -> None:
    bf = report.data["parts"]["bf16"].get("result")
    if bf:
        report.headline("bf16_speedup", bf["speedup"])
        report.headline("bf16_loss_rel_diff", bf["loss_rel_diff"])


def batch_headlines(report: GpuReport) -> None:
    batch = report.data["parts"]["batch"].get("result")
    if batch:
        report.headline("batch_images_per_second", batch["images_per_second_steps"])
        report.headline("batch_speedup", batch["speedup_steps"])


def setup_headlines(report: GpuReport) -> None:
    setup = {**report.data["parts"]["setup"], **report.data["parts"]["setup_process"]}
    report.headline(
        "setup_seconds",
        {k: v["to_first_step_s"] for k, v in setup.items() if isinstance(v, dict) and "to_first_step_s" in v},
    )


def standard_headlines(report: GpuReport) -> None:
    report.headline("standard_loss_ratio", {size: r["loss_ratio"] for size, r in report.measured("standard").items()})


# (sub-part, what it measures, what it adds to the headline keys once done), in the order they run
SUBPARTS: tuple[tuple[str, Callable[[GpuSettings, Inputs, float, Put], None], Callable[[GpuReport], None]], ...] = (
    ("setup", gpu_setup, lambda report: None),
    ("speed", gpu_speed, speed_headlines),
    ("bf16", gpu_bf16, bf16_headlines),
    ("batch", gpu_batch, batch_headlines),
    ("setup_process", gpu_setup_process, setup_headlines),
    ("standard", gpu_standard, standard_headlines),
)


def run_subparts(report: GpuReport, g: GpuSettings, inputs: Inputs) -> None:
    for name, part, headlines in SUBPARTS:
        report.run(name, g.budgets[name], functools.partial(part, g, inputs))  # part(deadline, put)
        headlines(report)


def main(args: argparse.Namespace, out: Path) -> None:
    """The --gpu run: every sub-part in turn into ``out``, then a summary on the terminal."""
    g = GPU_QUICK if args.quick else GPU_FULL
    if DEVICE != "cuda":
        log("no CUDA device: the --gpu part runs on the CPU (a smoke test, not GPU numbers)")
    with tempfile.TemporaryDirectory(prefix="nst_bench_gpu_") as tmp:
        folder = Path(tmp)
        content, style, source = input_images(folder, args.images)
        data = {"machine": machine(), "images": source, "quick": args.quick, "settings": asdict(g)}
        report = GpuReport(out, data)
        log(f"{report.data['machine']['gpu'] or report.data['machine']['cpu']}, torch {torch.__version__}, {source}")
        run_subparts(report, g, Inputs(content, style, folder))
        report.data["machine"]["load_average_at_end"] = os.getloadavg()
        report.save()
    print()
    print(summary(report.data))
    print()
    log(f"wrote {out}")


# ---- the summary on the terminal ---------------------------------------------------------------------------------


def summary(data: dict[str, Any]) -> str:
    parts, m = data["parts"], data["machine"]
    lines = [f"{m['gpu'] or 'no GPU: ' + m['cpu']}, torch {m['torch']}, CUDA {m['cuda']}, images: {data['images']}"]
    for name, record in parts.items():
        lines.append(
            f"{name}: {record.get('status')} in {record.get('seconds', 0):.0f} s (budget {record['budget_s']} s)"
        )
    for size, r in (parts.get("speed") or {}).items():
        if isinstance(r, dict) and "seconds_per_step" in r:
            sps = r["seconds_per_step"]
            lines.append(f"  {size} px ms/step: " + ", ".join(f"{k} {1000 * v:.2f}" for k, v in sps.items()))
    if isinstance((parts.get("bf16") or {}).get("result"), dict):
        b = parts["bf16"]["result"]
        lines.append(
            f"  bf16 {b['size']} px: fp32 {1000 * b['seconds_per_step']['32-true']:.2f} ms/step, bf16 "
            f"{1000 * b['seconds_per_step']['bf16-mixed']:.2f}, speed-up {b['speedup']:.3f}, "
            f"loss diff {b['loss_rel_diff']:.4f} after {b['steps']} steps"
        )
    if isinstance((parts.get("batch") or {}).get("result"), dict):
        b = parts["batch"]["result"]
        lines.append(
            f"  batch K={b['k']} {b['size']} px images/s (steps): one {b['images_per_second_steps']['one']:.3f}, "
            f"batch {b['images_per_second_steps']['batch']:.3f} (x{b['speedup_steps']:.2f})"
        )
    for size, r in (parts.get("standard") or {}).items():
        if isinstance(r, dict) and "loss_ratio" in r:
            lines.append(
                f"  standard {size} px: step ratio {r['step_ratio']:.3f}, loss ratio "
                + ", ".join(f"after {n}: {v:.4f}" for n, v in r["loss_ratio"].items())
            )
    for label in ("first_in_process", "again_in_process"):
        r = (parts.get("setup") or {}).get(label)
        if isinstance(r, dict):
            lines.append(f"  set-up {label}: {r['to_first_step_s']:.2f} s to the first step")
    r = (parts.get("setup_process") or {}).get("process")
    if isinstance(r, dict):
        lines.append(f"  set-up fresh process: {r['to_first_step_s']:.2f} s from its start to the first step")
    return "\n".join(lines)
