"""nst-lightning benchmarks: every comparison side by side in one process, reported as ratios.

    python benchmarks/run.py [--quick] [--only PART ...] [--out benchmarks/results.json] [--images DIR]
    python benchmarks/run.py --gpu [--quick] --out $OUT/gpu_results.json [--images DIR]

Each comparison alternates its contenders (A B A B ...) so that a slow minute of a busy machine hits them
alike, and reports medians and the ratio of medians. Results go to the terminal (a table), to a JSON file
and to a small plot next to it (results.png). One module per part (parts/), in the order they run:

  overhead    our Lightning run vs our objective and L-BFGS in a plain loop (plain_loop.py), and vs the network
              alone (forward + backward, no loss: the limit)
  standard    the usual PyTorch port of the paper (standard.py: torch.optim.LBFGS on the raw loss, 0-255 pixels)
              vs ours on the paper's exact objective: loss after 100 and 300 steps, seconds per step (on a CPU in
              lockstep: one step of each in turn, in one run)
  stall       white noise, a striped style, 64 px: how far each optimiser brings the loss in 100 steps
  bf16        mixed precision: trainer.precision=bf16-mixed vs 32-true
  pastiche    the peer: pastiche 1.6.0 (its CLI, as a subprocess) vs ours, same objective
  memory      peak RSS of fresh `python -m nst_lightning` processes vs nst_lightning.engine.memory's estimate
  batched     a batched sweep vs sequential runs (features.py)
  multiscale  coarse to fine vs single scale (features.py)
  seeds       the standard comparison from several starts
  setup       the import floor, a fresh process to its first step, a multirun's later jobs
  tiles       exact tiles: s/step tiled vs untiled at 1024 px, peak memory at 2048 px
  large       a 4096 px image under the defaults; the L-BFGS history in bf16 against fp32 (final loss)
  devices     2 processes (trainer.devices=2) vs 1: a batched sweep and one tiled image, s/step
  gpu         --gpu: the GPU numbers in one short run (about 4 minutes on an H100), each sub-part on its own time
              budget, the JSON rewritten after each measurement so that a timeout keeps what was measured

Shared by the parts: common.py (settings, the machine, the inputs, our configuration, child processes and their
peak memory), clock.py (the step clock: a Lightning callback handed to ``run(callbacks=...)``), report.py (the
JSON, the table, the plot) and adapter.py (every call into nst_lightning).

Timings exclude set-up: a run's seconds per step are the median of its step durations after its warm-up steps
(on CUDA from events recorded on the stream, so the step is never made to wait for the host). Every loss is
measured by our objective (nst_lightning.model.objective.Objective) in float32, on the images as optimised.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder is not a package
import adapter
import report
from common import DEVICE, FULL, QUICK, Inputs, Settings, input_images, log, machine
from parts import (
    batched,
    bf16,
    devices,
    gpu,
    large,
    memory,
    multiscale,
    overhead,
    pastiche,
    seeds,
    setup,
    stall,
    standard,
    tiles,
)

HERE = Path(__file__).resolve().parent

# --only's choices, in the order they run
PARTS: dict[str, ModuleType] = {
    "overhead": overhead,
    "standard": standard,
    "stall": stall,
    "bf16": bf16,
    "pastiche": pastiche,
    "memory": memory,
    "batched": batched,
    "multiscale": multiscale,
    "seeds": seeds,
    "setup": setup,
    "tiles": tiles,
    "large": large,
    "devices": devices,
}
# the rows' order
TABLE = (overhead, standard, seeds, stall, bf16, pastiche, batched, multiscale, setup, memory, tiles, large, devices)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks that it all runs")
    parser.add_argument(
        "--out", type=Path, help="the JSON (default: benchmarks/results.json; with --gpu benchmarks/gpu_results.json)"
    )
    parser.add_argument("--threads", type=int, help="torch threads in this process (default: torch's choice)")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=tuple(PARTS),
        help="run only these parts: their keys replace those already in the JSON",
    )
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU part alone (~4 min on an H100), its JSON rewritten as it goes"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="sizes of the overhead, standard and seeds parts (default: 128 256 512)"
    )
    parser.add_argument("--bf16-size", type=int, help="the bf16 part's size (default: 512 with native bf16, else 128)")
    parser.add_argument(
        "--images", type=Path, help="a folder with tubingen.jpg and starry_night.jpg (default: ../shared/images)"
    )
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> Settings:
    s = QUICK if args.quick else FULL
    if args.sizes:
        sizes = tuple(args.sizes)
        s = replace(s, overhead_sizes=sizes, standard_sizes=sizes, seeds_sizes=sizes)
    if args.bf16_size:
        s = replace(s, bf16_size=args.bf16_size, bf16_size_native=args.bf16_size)
    return s


def prepare_process(seed: int, threads: int | None) -> None:
    adapter.register_configs()
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: False", tips: not benchmark output
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def measure(s: Settings, parts: set[str], images: Path | None, quick: bool) -> dict[str, Any]:
    """Every part in ``parts``, in turn: the results, with each part's entry under ``details``."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nst_bench_") as tmp:
        folder = Path(tmp)
        content, style, source = input_images(folder, images)
        results: dict[str, Any] = {"machine": machine(), "images": source, "quick": quick, "settings": asdict(s)}
        details: dict[str, Any] = {}
        log(f"{results['machine']['cpu']} ({DEVICE}), images: {source}")
        for name, part in PARTS.items():
            if name in parts:
                details[name] = part.measure(s, Inputs(content, style, folder))
                results.update(part.headline(details[name]))
    results["details"] = details
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


def main() -> None:
    args = parse_args()
    s = settings(args)
    prepare_process(s.seed, args.threads)
    if args.gpu:
        gpu.main(args, args.out or HERE / "gpu_results.json")
        return
    out = args.out or HERE / "results.json"
    parts = set(args.only or PARTS)
    results = report.write(measure(s, parts, args.images, args.quick), out, only=bool(args.only))
    print()
    print(report.table(results, [part.rows for part in TABLE]))
    print()
    log(f"wrote {out}")
    if parts == set(PARTS):
        report.plot(results, out.with_suffix(".png"))
        log(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
