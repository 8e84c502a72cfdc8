"""Writing files so that nothing a user has is ever half-written or lost."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CACHE_ENV = "NST_LIGHTNING_CACHE"


def cache_dir() -> Path:
    """Where downloads and decoded weights are kept: ``$NST_LIGHTNING_CACHE``, else ``~/.cache/nst_lightning``."""
    override = os.environ.get(CACHE_ENV)
    return Path(os.path.expanduser(override)) if override else Path.home() / ".cache" / "nst_lightning"


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (a moment where another thread could see 022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write(file)`` into a temp file in the same folder, then rename over ``path``.

    A reader (or a crash) never sees half a file; on any error the temp file is removed and an
    existing ``path`` is left as it was. The file gets the mode any new file would (0666 less the umask),
    not the temp file's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):  # a file system without modes (FAT, some mounts) keeps its own
                os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON with sorted keys, atomically (temp file + rename)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def natural_key(path: Path) -> list[Any]:
    """Sort key in which numbers compare as numbers: job 2 before job 10, frame_9 before frame_10."""
    parts = re.split(r"(\d+)", path.as_posix())  # a group in split alternates text and digits
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
