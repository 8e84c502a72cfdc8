"""Run folders: one process per folder, nothing an earlier run left is touched, and a sweep that carries on.

- ``claim(folder)`` takes an exclusive ``flock`` on ``<folder>/.nst-lightning.lock`` for the life of the process
  (or until ``release``); a second process is refused with one line naming the folder and the process that holds
  it. The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a stale lock file
  never blocks a later run, rerun or ``resume=``; the file itself stays (removing it would let two processes each
  lock a different file of the same name).
- ``check_new_folder`` refuses a folder that holds an earlier run's output.

The Hydra side (claiming the folder before Hydra writes there, sweeps that carry on) is nst_lightning/apps/sweeps.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import shown, too_long, unwritable_reason

LOCK_NAME = ".nst-lightning.lock"
FAILED = "failed"  # the marker of a failed sweep job: its error text
# What a run leaves: a folder holding any of these is an earlier run's (or a user's) and is never reused.
RESULT_FILES = ("result.png", "metrics.json", "last.ckpt")
RESULT_FOLDERS = ("snapshots", "stages", "frames", "stylised", "tensorboard")

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are checked but not locked
    fcntl = None  # type: ignore[assignment]

_held: dict[Path, int] = {}  # folder (resolved) -> the open, locked file descriptor


def _holder(lock: Path) -> str:
    """The process id written in a lock file, or 'another process' while it is being written."""
    for _ in range(20):
        with contextlib.suppress(OSError):
            text = lock.read_text().strip()
            if text.isdigit():
                return f"process {text}"
        time.sleep(0.01)
    return "another process"


def unusable(folder: Path, key: str, exc: OSError) -> NSTError:
    reason = unwritable_reason(exc, folder)
    with contextlib.suppress(OSError):  # exists() itself raises for a name the system cannot take
        if folder.exists() and not folder.is_dir():
            reason = "a file is in the way"
    return NSTError(f"{key}={shown(folder)} cannot be used as a run folder ({reason}): pick a folder you can write to")


def claim(folder: str | Path, key: str = "hydra.run.dir") -> bool:
    """Create ``folder`` and lock it for this process; True if newly locked, False if this process holds it already.

    NSTError (one line) if the folder cannot be created or written, or if another live process holds it.
    """
    folder = Path(folder)
    try:
        if reason := too_long(folder / LOCK_NAME):
            raise OSError(errno.ENAMETOOLONG, reason)
        folder.mkdir(parents=True, exist_ok=True)
        real = folder.resolve()
        if real in _held:
            return False
        lock = real / LOCK_NAME
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise unusable(folder, key, exc) from None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise NSTError(
                f"{folder} is in use by {_holder(lock)} (another run writing there): pick another {key}, "
                "or wait until that process ends"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    _held[real] = fd
    return True


def release(folder: str | Path) -> None:
    """Give up this process's lock on ``folder`` (the lock file stays: see the module docstring)."""
    with contextlib.suppress(OSError):
        fd = _held.pop(Path(folder).resolve(), None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock


def release_all() -> None:
    """Give up every folder this process holds (the entry point does, when the run ends)."""
    for folder in list(_held):
        release(folder)


def earlier_output(folder: Path, names: tuple[str, ...] = ()) -> str | None:
    """What in ``folder`` an earlier run left (``result.png``, ``snapshots/``, ...), or None."""
    if not folder.is_dir():
        return None
    for name in (*names, *RESULT_FILES):
        if (folder / name).exists():
            return name
    for name in RESULT_FOLDERS:
        with contextlib.suppress(OSError):
            if (folder / name).is_dir() and any((folder / name).iterdir()):
                return f"{name}/ folder"
    return None


def check_new_folder(folder: Path, key: str, sweep: bool = False) -> None:
    """Refuse (NSTError) a folder that holds an earlier run's output; a sweep folder also its multirun.yaml and
    its jobs' results."""
    found = earlier_output(folder, ("multirun.yaml",) if sweep else ())
    if found is None and sweep and folder.is_dir():
        for job in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (inner := earlier_output(job)) is not None:
                found = f"{job.name}/{inner}"
                break
    if found is not None:
        raise NSTError(f"{folder} already holds a {found}: pick another {key}, nothing was overwritten")


def claim_new(folder: str | Path, key: str = "hydra.run.dir", sweep: bool = False) -> bool:
    """``claim`` a folder, then refuse it if it holds an earlier run's output (checked under the lock, so a run
    that finished a moment ago is seen); True if newly locked."""
    folder = Path(folder)
    newly = claim(folder, key)
    try:
        check_new_folder(folder, key, sweep)
    except NSTError:
        if newly:
            release(folder)
        raise
    return newly
