"""Checkpoints written where they land: Lightning's own writer stages a checkpoint in the system's temp folder and
moves it across file systems, so a full disk left half a checkpoint in the run folder and a traceback. They are
streamed to the file, never held in memory: at 4096 px the L-BFGS history alone is 14 GiB."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nst_lightning.util.files import atomic_write


class _Stream:
    """What ``torch.save`` writes into: the open file (or nothing, only counting), remembering the first OSError of
    a write, which torch.save's zip writer reports as a RuntimeError of its own."""

    def __init__(self, file: IO[bytes] | None = None) -> None:
        self.file, self.size, self.error = file, 0, None

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.file is None:
            return len(data)
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()


def serialised_size(checkpoint: dict[str, Any]) -> int:
    """The bytes ``torch.save`` writes for ``checkpoint``, counted without holding them."""
    stream = _Stream()
    torch.save(checkpoint, stream)  # type: ignore[arg-type]
    return stream.size


def _save(checkpoint: dict[str, Any], file: IO[bytes]) -> None:
    stream = _Stream(file)
    try:
        torch.save(checkpoint, stream)  # type: ignore[arg-type]
    except RuntimeError:
        if stream.error is not None:  # a full disk, a vanished device: the system's own error
            raise stream.error from None
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialise into a temp file in the checkpoint's own folder, flush it to the disk, rename it over the
    checkpoint: a crash, a kill or a full disk leaves the previous checkpoint whole, and no temp file. A write that
    fails raises files.WriteError (one line, with the space needed)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_write(path, lambda f: _save(checkpoint, f), durable=True, needs=lambda: serialised_size(checkpoint))
