"""Checkpoints written where they land: Lightning's own writer stages a checkpoint in the system's temp folder and
moves it across file systems, so a full disk left half a checkpoint in the run folder and a traceback."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from nst_lightning.util.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Serialise in memory, write a temp file in the checkpoint's own folder, flush it to the disk, rename it over
    the checkpoint: a crash, a kill or a full disk leaves the previous checkpoint whole, and no temp file. A write
    that fails raises files.WriteError (one line, with the space needed)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, buffer.getbuffer(), durable=True)
