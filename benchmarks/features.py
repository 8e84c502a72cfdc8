"""Benchmarks of two product features, side by side in one process, merged into benchmarks/results.json:

- ``batched_speedup``: a sweep of K=4 ratios as one batch (``batch_sweep``) vs the 4 runs one after the
  other, images per hour (whole runs, set-up included), alternating the two, median of the repeats; and
  ``batched_max_loss_rel_diff``: how far the batched images' final losses are from the separate runs'.
- ``multiscale_time_ratio``: coarse to fine (``scales=[256,512]``) vs single scale at 512 px: the time the
  coarse-to-fine run needs to reach the single-scale run's final loss (both measured at 512 px, by our
  loss), over the single-scale run's time. Below 1: coarse to fine is faster.

    python benchmarks/features.py [--quick] [--out benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_lightning.config import conf_dir, register_configs
from nst_lightning.run import run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "images"


def config(*overrides: str):  # noqa: ANN201  (an OmegaConf DictConfig)
    content, style = SHARED / "tubingen.jpg", SHARED / "starry_night.jpg"
    images = [f"content={content}", f"style={style}"] if content.is_file() and style.is_file() else []
    quiet = ["snapshot_every=0", "trainer.enable_progress_bar=false"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[*images, *quiet, *overrides])


def timed_run(cfg, folder: Path) -> tuple[float, dict]:  # noqa: ANN001
    start = time.perf_counter()
    metrics = run(cfg, folder)
    return time.perf_counter() - start, metrics


def batched(size: int, steps: int, repeats: int, work: Path) -> dict:
    ratios = ["1e-4", "1e-3", "1e-2", "1e-1"]
    batch_times, separate_times, diffs = [], [], []
    for r in range(repeats):  # alternate: batch, then the K separate runs
        seconds, batch = timed_run(
            config(f"size={size}", f"steps={steps}", f"batch_sweep.ratio=[{','.join(ratios)}]"), work / f"b{r}"
        )
        batch_times.append(seconds)
        total = 0.0
        for i, ratio in enumerate(ratios):
            seconds, alone = timed_run(config(f"size={size}", f"steps={steps}", f"ratio={ratio}"), work / f"s{r}_{i}")
            total += seconds
            together = list(batch["batch"].values())[i]
            diffs.append(abs(together["loss_total"] - alone["loss_total"]) / alone["loss_total"])
        separate_times.append(total)
    speedup = statistics.median(separate_times) / statistics.median(batch_times)
    print(
        f"batched K=4 at {size} px, {steps} steps: batch {statistics.median(batch_times):.1f} s, "
        f"4 separate runs {statistics.median(separate_times):.1f} s -> {speedup:.2f}x images per hour"
    )
    return {
        "batched_speedup": speedup,
        "batched_max_loss_rel_diff": max(diffs),
        "batched_size": size,
        "batched_steps": steps,
    }


def stage_losses(folder: Path) -> list[float]:
    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [event.value for event in acc.Scalars("loss/total")]


def multiscale(size: int, steps: int, work: Path) -> dict:
    coarse = size // 2
    single_seconds, single = timed_run(config(f"size={size}", f"steps={steps}"), work / "single")
    target = single["loss_total"]  # the single-scale result's loss, at full size
    multi_cfg = config(f"scales=[{coarse},{size}]", f"scale_steps=[{2 * steps},{steps}]")
    _, multi = timed_run(multi_cfg, work / "multi")
    first = json.loads((work / "multi" / "stages" / f"0_{coarse}px" / "metrics.json").read_text())
    # loss/total at step k is the loss of the image after k updates at full size
    losses = stage_losses(work / "multi")
    reached = next((k for k, loss in enumerate(losses) if loss <= target), None)
    fine_steps = reached if reached is not None else multi["steps"]
    seconds = first["seconds"] + fine_steps * multi["seconds_per_step"]
    ratio = seconds / single["seconds"]
    print(
        f"coarse to fine {coarse}->{size} px: single scale {steps} steps {single['seconds']:.1f} s "
        f"(loss {target:.4g}); "
        f"coarse {2 * steps} steps {first['seconds']:.1f} s + {fine_steps} fine steps -> {ratio:.2f}x the time"
        + ("" if reached is not None else " (not reached: upper bound)")
    )
    return {
        "multiscale_time_ratio": ratio,
        "multiscale_reached": reached is not None,
        "multiscale_size": size,
        "multiscale_single_steps": steps,
        "multiscale_single_seconds_with_setup": single_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (checks the script runs)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = batched(64 if args.quick else 128, 3 if args.quick else 20, 1 if args.quick else 2, work / "batch")
        results |= multiscale(64 if args.quick else 512, 2 if args.quick else 30, work / "multi")
    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.is_file() else {}
    merged.update(results)
    out.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
