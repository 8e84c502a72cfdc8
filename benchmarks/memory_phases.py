"""Where a run's memory goes: ``python -m nst_lightning`` in-process, its resident memory sampled every 0.2 s, and
the peak of each phase printed at the end (the target pass, each tiled pass, the L-BFGS update, the panel).

    python benchmarks/memory_phases.py content=tubingen.jpg style=starry_night.jpg size=4096 steps=2

The estimate of nst_lightning/engine/memory.py is checked against these peaks, phase by phase.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from nst_lightning.util import interrupts

interrupts.install()

PERIOD_S = 0.2
phase = ["start"]
peaks: dict[str, float] = {}


def rss_gib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _sample() -> None:
    while True:
        now = phase[0]
        peaks[now] = max(peaks.get(now, 0.0), rss_gib())
        time.sleep(PERIOD_S)


def mark(name: str) -> None:
    phase[0] = name
    print(f"[phase] {time.strftime('%H:%M:%S')} {name}: {rss_gib():.2f} GiB", flush=True)


def _watch(owner: Any, attr: str, name: str) -> None:
    """Mark the phase ``name`` while owner.attr runs, and the caller's again after it (primed: "targets'")."""
    inner = getattr(owner, attr)

    @functools.wraps(inner)
    def watched(*args: Any, **kwargs: Any) -> Any:
        before = phase[0]
        mark(name)
        try:
            return inner(*args, **kwargs)
        finally:
            mark(before + "'")

    setattr(owner, attr, watched)


def _instrument() -> None:
    from nst_lightning.engine import run
    from nst_lightning.model import tiles
    from nst_lightning.optim import lbfgs
    from nst_lightning.results import metrics

    _watch(run, "targets", "targets")
    _watch(tiles.TiledNetwork, "forward", "targets: a whole image's features from tiles")
    _watch(tiles, "first_pass", "tiles: first pass")
    _watch(tiles, "values", "tiles: values (no gradient)")
    _watch(metrics, "measure", "panel")
    surrogate = tiles._surrogate

    def second_pass(*args: Any) -> Any:
        if phase[0] != "tiles: second pass":
            mark("tiles: second pass")
        return surrogate(*args)

    tiles._surrogate = second_pass
    step = lbfgs.LBFGS.step

    def update(self: Any, closure: Any, active: Any = None) -> Any:
        def evaluated() -> Any:
            mark("closure")
            loss = closure()
            mark("L-BFGS update")
            return loss

        out = step(self, evaluated, active)
        mark("after a step")
        return out

    lbfgs.LBFGS.step = update


def main() -> None:
    threading.Thread(target=_sample, daemon=True).start()
    _instrument()
    from nst_lightning.apps.cli import main as cli

    try:
        cli()
    finally:
        mark("end")
        time.sleep(2 * PERIOD_S)
        width = max(len(name) for name in peaks)
        for name, peak in peaks.items():
            print(f"[peak] {name:{width}s} {peak:6.2f} GiB")


if __name__ == "__main__":
    main()
