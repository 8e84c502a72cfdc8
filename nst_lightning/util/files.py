"""Writing files so that nothing a user has is ever half-written or lost."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from nst_lightning.util.errors import NSTError

log = logging.getLogger(__name__)
CACHE_ENV = "NST_LIGHTNING_CACHE"


def cache_dir() -> Path:
    """Where downloads and decoded weights are kept: ``$NST_LIGHTNING_CACHE``, else ``~/.cache/nst_lightning``."""
    override = os.environ.get(CACHE_ENV)
    return Path(os.path.expanduser(override)) if override else Path.home() / ".cache" / "nst_lightning"


NAME_MAX = 255  # bytes in one path component (Linux, macOS); the file system may say less (os.pathconf)
PATH_MAX = 4096  # bytes in a path, its terminating zero included (Linux)
FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class WriteError(NSTError, OSError):
    """A file that could not be written (a full disk, a read-only place, a name over the system's limits), in one
    line that names it. Also an OSError, so that a caller for which the write is optional (the cache) carries on."""

    path: Path | None = None
    reason: str = ""


def size_text(n: int) -> str:
    """``n`` bytes for a person: 812 B, 2.2 MB, 1.5 GB (decimal units, as df -H and file managers)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def shown(path: str | Path) -> str:
    """A path short enough for a one-line message: one of several thousand characters is cut in the middle."""
    text = str(path)
    if len(text) <= 240:
        return text
    return f"{text[:100]}...{text[-100:]} ({len(text)} characters)"


def too_long(path: str | Path) -> str | None:
    """Why ``path`` cannot exist on this system (a component over NAME_MAX bytes, the whole over PATH_MAX), or
    None. Checked before the system is asked, whose answer names neither limit."""
    raw = os.fsencode(str(path))
    if len(raw) >= PATH_MAX:
        return f"the path is {len(raw)} bytes long, over the system's limit of {PATH_MAX - 1}"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        name = os.fsdecode(longest)
        return f"one of its names ('{name[:40]}...') is {len(longest)} bytes long, over the limit of {NAME_MAX}"
    return None


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            if folder.is_dir():
                return shutil.disk_usage(folder).free
    return None


def unwritable_reason(exc: OSError, path: str | Path) -> str:
    """Why ``path`` could not be written, for a person: the file system is read-only, a file is in the way, ..."""
    if exc.errno in FULL:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENAMETOOLONG or too_long(path):
        return too_long(path) or exc.strerror or "a name is too long"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(exc, NotADirectoryError | FileExistsError):
        return "a file is in the way"
    return exc.strerror or str(exc) or exc.__class__.__name__


def write_error(path: str | Path, exc: OSError, size: int | None = None) -> WriteError:
    """The one line for an OSError while writing ``path`` (``size``: the bytes it needs, where known); the error
    keeps ``path`` and ``reason`` for callers that add their own advice."""
    path = Path(path)
    reason = unwritable_reason(exc, path)
    if exc.errno in FULL:
        free = _free_bytes(path.parent)
        needs = f"it needs {size_text(size)}" if size is not None else "the file did not fit"
        left = f", {size_text(free)} free there" if free is not None else ""
        error = WriteError(f"no space left on the device for {shown(path)} ({needs}{left}): free some space")
    else:
        error = WriteError(f"cannot write {shown(path)}: {reason}")
    error.errno, error.path, error.reason = exc.errno, path, reason
    return error


def check_writable(folder: str | Path, what: str) -> None:
    """Create ``folder`` if needed and write a probe file into it: a place a run will write to is tried before the
    first step, and refused (NSTError, one line naming it as ``what``) if it cannot be written."""
    folder = Path(folder)
    try:
        if reason := too_long(folder / ".probe-xxxxxxxx"):
            raise OSError(errno.ENAMETOOLONG, reason)
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NSTError(f"the {what} {shown(folder)} cannot be written ({unwritable_reason(exc, folder)})") from None


_said_unwritable = False


def cache_unwritable(exc: OSError) -> None:
    """Say once per process that the cache cannot be written (full, read-only): it is optional, the run goes on."""
    global _said_unwritable
    if not _said_unwritable:
        _said_unwritable = True
        log.warning(
            "the cache is not written (%s); it is optional: this run goes on from memory (set %s to a folder with "
            "space to keep downloads and decoded weights)",
            exc,
            CACHE_ENV,
        )


def cache_write(path: Path, data: bytes) -> bool:
    """Keep ``data`` at ``path`` in the cache; False (said once, see cache_unwritable) where it cannot be written."""
    try:
        atomic_write(path, data)
    except OSError as exc:  # files.WriteError: full, read-only, no permission
        cache_unwritable(exc)
        return False
    return True


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


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], None] | bytes,
    durable: bool = False,
    needs: Callable[[], int] | None = None,
) -> Path:
    """Write ``write`` (bytes, or a function writing into the open file) into a temp file in the same folder, then
    rename over ``path``.

    A reader (or a crash) never sees half a file; on any error the temp file is removed and an existing ``path``
    is left as it was, and an OSError (a full disk, a read-only place, a name too long) becomes a WriteError, one
    line naming the file (and, for bytes, the space they need). The file gets the mode any new file would (0666
    less the umask), not the temp file's private 0600. ``durable``: on the disk before the rename (a checkpoint
    must survive a power loss). ``needs``: the bytes a function writes, asked only to say what a full disk lacked.
    """
    path = Path(path)
    size = len(write) if isinstance(write, bytes | bytearray | memoryview) else None
    tmp: str | None = None
    try:
        if reason := too_long(path.parent / f".{path.stem}-xxxxxxxx{path.suffix}"):
            raise OSError(errno.ENAMETOOLONG, reason)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
        if hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):  # a file system without modes (FAT, some mounts) keeps its own
                os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            if size is not None:
                f.write(write)  # type: ignore[arg-type]
            else:
                write(f)  # type: ignore[operator]
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            if size is None and needs is not None and exc.errno in FULL:
                size = needs()
            raise write_error(path, exc, size) from exc
        raise
    return path


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented JSON with sorted keys, atomically (temp file + rename)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, text.encode())


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
