"""The benchmark's lockstep clock (benchmarks/clock.py): which interval is charged to which contender."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import clock as bench  # benchmarks/ is a folder of scripts, not a package


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def now(self, sync: bool = False) -> bench.Stamp:
        return bench.Stamp(wall=self.t, cpu=2 * self.t)


def test_lockstep_charges_each_contender_its_own_steps(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench, "now", clock.now)
    seen = []

    def standard(n: int) -> None:
        seen.append(n)
        clock.advance(0.030 + 0.001 * n)  # the standard's step n

    lockstep = bench.Lockstep({"standard": standard, "network_only": lambda n: clock.advance(0.020)})
    ours = [0.050, 0.040, 0.041, 0.042, 0.043, 0.044]  # our steps (the first one is warm-up)
    for seconds in ours:
        clock.advance(seconds)
        lockstep.on_train_batch_end(None, None)

    assert seen == [1, 2, 3, 4, 5, 6]  # the other contender's step number follows ours
    timings = lockstep.timings(warmup=1)
    assert timings["ours"]["wall"] == pytest.approx(0.042)  # median of steps 2-6
    assert timings["ours"]["cpu"] == pytest.approx(0.084)
    assert timings["standard"]["wall"] == pytest.approx(0.034)  # median of 0.032 .. 0.036
    assert timings["network_only"]["wall"] == pytest.approx(0.020)
    assert timings["network_only"]["wall_mean"] == pytest.approx(0.020)
