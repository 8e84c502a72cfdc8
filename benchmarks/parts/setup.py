"""Set-up on this machine: the import floor, a fresh process to its first step, a run in this process (first and
again), and the later jobs of a multirun."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import clock
from common import ROOT, Inputs, Row, Settings, log, make_cfg

# What the imports cost before any of our code runs: each a fresh interpreter, best of three. Lightning imports
# torch._dynamo at module level (lightning/fabric/wrappers.py), so "torch, torch._dynamo" is a floor for any
# Lightning run.
IMPORTS = {
    "python": "pass",
    "torch": "import torch",
    "torch, torch._dynamo": "import torch, torch._dynamo",
    "lightning": "import lightning",
    "nst_lightning.engine.run": "import nst_lightning.engine.run",
}


def snapshot_times(tensorboard: Path) -> dict[int, float]:
    """{step: wall time} of a run's "image" snapshots in TensorBoard (step 0: the training loop's start)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tensorboard), size_guidance={"images": 0})
    acc.Reload()
    return {event.step: event.wall_time for event in acc.Images("image")}


def process_setup(size: int, steps: int, seed: int, content: Path, style: Path, folder: Path, timeout: float) -> dict:
    """A fresh `python -m nst_lightning size=<size> steps=<steps>` (snapshot_every=1): seconds from the process
    start to the end of its first step, read from the wall time of its step-1 snapshot in TensorBoard."""
    run_dir = folder / "setup_process"
    args = [f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", f"seed={seed}"]
    args += ["snapshot_every=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "nst_lightning", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    total = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"python -m nst_lightning failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
    walls = snapshot_times(run_dir / "tensorboard")
    return {
        "to_train_start_s": walls[0] - started,
        "to_first_step_s": walls[1] - started,
        "process_s": total,
        "size": size,
        "steps": steps,
    }


def multirun_setup(
    size: int, steps: int, jobs: int, content: Path, style: Path, folder: Path, timeout: float
) -> dict[str, Any]:
    """`python -m nst_lightning -m seed=0,..,jobs-1` in one process (Hydra's basic launcher): for each job after the
    first, the seconds from the previous job's last step to this job's first step (the previous job's outputs,
    Hydra's job set-up, our set-up, one step), from the runs' snapshot wall times in TensorBoard."""
    sweep = folder / "setup_multirun"
    args = [f"content={content}", f"style={style}", f"size={size}", f"steps={steps}", "snapshot_every=1"]
    args += ["trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}", "seed=" + ",".join(map(str, range(jobs)))]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "nst_lightning", "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the multirun failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}")
    walls = [snapshot_times(sweep / "tensorboard" / f"seed={j}") for j in range(jobs)]
    later = [walls[j][1] - walls[j - 1][max(walls[j - 1])] for j in range(1, jobs)]
    return {
        "first_job_to_first_step_s": walls[0][1] - started,
        "later_jobs_s": later,
        "process_s": time.time() - started,
        "size": size,
        "steps": steps,
    }


def import_seconds(statement: str, trials: int = 3) -> float:
    best = math.inf
    for _ in range(trials):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True, capture_output=True, timeout=120)
        best = min(best, time.perf_counter() - started)
    return best


def measure(s: Settings, inputs: Inputs) -> dict[str, Any]:
    content, style, folder = inputs.content, inputs.style, inputs.folder
    imports = {name: import_seconds(statement) for name, statement in IMPORTS.items()}
    log("imports (s): " + ", ".join(f"{k} {v:.2f}" for k, v in imports.items()))
    process = process_setup(s.setup_size, s.setup_steps, s.seed, content, style, folder, timeout=300)
    log(f"set-up, fresh process: start to first step {process['to_first_step_s']:.2f} s")
    cfg = make_cfg(content, style, s.setup_size, s.setup_steps, f"seed={s.seed}")
    in_process = {}
    for label in ("first_in_process", "again_in_process"):
        r = clock.ours(cfg, 1)
        in_process[label] = {"to_train_start_s": r.to_train_start, "to_first_step_s": r.to_first_step}
    log(f"set-up in this process: {in_process}")
    multirun = multirun_setup(s.setup_size, s.setup_steps, s.setup_jobs, content, style, folder, timeout=600)
    log(f"multirun: later jobs {multirun['later_jobs_s']}")
    return {"imports_s": imports, "process": process, "in_process": in_process, "multirun": multirun}


def headline(details: dict[str, Any]) -> dict[str, Any]:
    return {
        "setup_seconds": {
            "process_to_first_step": details["process"]["to_first_step_s"],
            "import_floor_torch_dynamo": details["imports_s"]["torch, torch._dynamo"],
            "again_in_process": details["in_process"]["again_in_process"]["to_first_step_s"],
            "multirun_later_job_max": max(details["multirun"]["later_jobs_s"]),
        }
    }


def rows(results: dict[str, Any]) -> list[Row]:
    if "setup" not in results["details"]:
        return []
    st = results["details"]["setup"]
    imports, later = st["imports_s"], st["multirun"]["later_jobs_s"]
    engine = next(
        k for k in ("nst_lightning.engine.run", "nst_lightning.run") if k in imports
    )  # the module's name then
    return [
        (
            "set-up, fresh process (s)",
            f"{st['process']['to_first_step_s']:.2f}",
            f"{imports['torch, torch._dynamo']:.2f}",
            f"{st['process']['to_first_step_s'] / imports['torch, torch._dynamo']:.2f}",
            f"start to first step, {st['process']['size']} px; other: python -c 'import torch, torch._dynamo' "
            "(Lightning's floor); target 3 s",
        ),
        (
            "set-up, imports (s)",
            f"{imports[engine]:.2f}",
            f"{imports['lightning']:.2f}",
            f"{imports[engine] / imports['lightning']:.2f}",
            f"import nst_lightning.engine.run, import lightning (torch alone {imports['torch']:.2f})",
        ),
        (
            "set-up, later jobs of a multirun (s)",
            f"{max(later):.2f}",
            f"{st['in_process']['again_in_process']['to_first_step_s']:.2f}",
            "-",
            "previous job's last step to this job's first step (max); other: run() again; target 1 s",
        ),
    ]
