"""Reliability, round three, tried as an adversarial user would: a Ctrl-C at any moment of start-up, processes that
outlive their test, full disks, unwritable and over-long places, ``--help`` with bad overrides, the random-network
study's balance, two videos started in the same second, and the wording of two refusals.

The new names are imported inside the tests, so each test also runs, and fails, against the code before these
fixes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import Processes

pytest_plugins = ["pytester"]

TINY = ["size=32", "steps=1", "snapshot_every=0", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------------------------------------------------------
# A test that starts a process ends it, and the process's children, pass or fail
# ------------------------------------------------------------------------------------------------------------------

SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def test_processes_are_killed_with_their_children():
    started = Processes()
    parent = started.start([sys.executable, "-c", SPAWNER], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(parent.pid) and _alive(child)
    started.end()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parent.returncode is not None and not _alive(child)


def test_a_failing_test_still_ends_its_processes(pytester, tmp_path):
    pid_file = tmp_path / "pids"
    pytester.makepyfile(
        test_inner=f"""
        import subprocess, sys
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from conftest import processes  # noqa: F401  the fixture under test

        def test_fails(processes):
            proc = processes.start([sys.executable, "-c", {SPAWNER!r}], stdout=subprocess.PIPE, text=True)
            child = proc.stdout.readline().strip()
            open({str(pid_file)!r}, "w").write(f"{{proc.pid}} {{child}}")
            assert False, "the test fails with its processes running"
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    pids = [int(p) for p in pid_file.read_text().split()]
    deadline = time.monotonic() + 10
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, pids))
