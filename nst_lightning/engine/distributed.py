"""Several devices for one run, through Lightning's ``ddp`` strategy and torch.distributed (gloo on CPU, NCCL on CUDA).

Lightning's launcher runs the command line again for each rank > 0. Every rank builds the same run from the same
settings, and then takes its part of it:

- a batched sweep's K images are split into contiguous shares, one per rank (``Share``): each rank optimises its own
  images and exchanges no gradient (every image has its own L-BFGS history already); what is written (the losses
  every ``log_every`` steps, snapshots, results, metrics, checkpoints) is gathered for the whole batch, so that it is
  what one device would write;
- one image in exact tiles (``engine.tile``): the ranks take disjoint tiles and exchange each step's summaries and
  gradient through ``Collectives`` (the ``Reduce`` of model/tiles.py), so every rank holds the same numbers and takes
  the same L-BFGS step: one trajectory;
- one untiled image has nothing to share: it is refused in one line that points at ``engine.tile``.

Only rank 0 claims the run folder and writes there (apps/sweeps.py keeps the other ranks' logging out of it). A
checkpoint holds the whole batch, as one device's does: a run stopped on N devices resumes on any number.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor

from nst_lightning.util.errors import NSTError

ENTRY_POINTS = ("nst_lightning.__main__", "nst-lightning")  # what Lightning's launcher can run again, per rank


def world_size(trainer: Mapping[str, Any]) -> int:
    """How many processes Lightning starts for these Trainer settings: the devices, as the accelerator parses
    ``devices``, times the nodes. An accelerator that is missing or unknown counts 1: Lightning says why."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    accelerator = trainer.get("accelerator", "auto")
    if not isinstance(accelerator, str):
        return 1  # an Accelerator object, from Python: a run with its own plan
    name = {"auto": "cuda" if torch.cuda.is_available() else "cpu", "gpu": "cuda"}.get(accelerator, accelerator)
    if name not in AcceleratorRegistry:
        return 1
    kind = AcceleratorRegistry[name]["accelerator"]
    if not kind.is_available():
        return 1
    devices = trainer.get("devices", "auto")
    devices = kind.auto_device_count() if devices == "auto" else devices
    return len(kind.get_parallel_devices(kind.parse_devices(devices))) * int(trainer.get("num_nodes", 1))


class IndependentDDP(DDPStrategy):
    """Lightning's ``ddp`` (its launcher, process group, barriers, checkpoints written by rank 0) without the
    DistributedDataParallel wrapper: the wrapper averages gradients and starts every rank from rank 0's parameters,
    which would merge the separate images of a split batch and count a tiled image's gradient twice (``Collectives``
    sums it once)."""

    def configure_ddp(self) -> None:
        """Nothing to wrap: each rank's image is its own parameter."""


def check_devices(trainer: Mapping[str, Any], images: int, tiled: bool) -> int:
    """The number of processes the run takes (1: one device); one line where several cannot run it."""
    world = world_size(trainer)
    if world == 1:
        return 1
    import __main__

    spec = getattr(__main__, "__spec__", None)
    entry = spec.name if spec is not None else Path(sys.argv[0]).name
    if entry not in ENTRY_POINTS:
        raise NSTError(
            f"trainer.devices: {world} devices run from the command line (python -m nst_lightning ...), which "
            "Lightning starts again for every device; here, use one device"
        )
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str) and strategy not in ("auto", "ddp"):
        raise NSTError(
            f"trainer.strategy={strategy} cannot share a run across {world} devices: use trainer.strategy=ddp"
        )
    if int(trainer.get("num_nodes", 1)) > 1:
        raise NSTError(f"trainer.num_nodes={trainer['num_nodes']}: a run shares the devices of one machine only")
    if images == 1 and not tiled:
        raise NSTError(
            f"one untiled image runs on one device, not {world}: add engine.tile=<px> (e.g. 256) to share its tiles "
            "across the devices, or batch_sweep.* to share images; or set trainer.devices=1"
        )
    if 1 < images < world:
        raise NSTError(
            f"a batch of {images} images cannot fill {world} devices (each takes whole images): set "
            f"trainer.devices={images} or fewer"
        )
    return world


def lightning_strategy(strategy: Any, world: int) -> Any:
    """What the Trainer gets for ``trainer.strategy``: ``IndependentDDP`` wherever Lightning would use ``ddp``."""
    if strategy == "ddp" or (strategy == "auto" and world > 1):
        return IndependentDDP()
    return strategy


def check_tiles(tiles: int, world: int, tile: int) -> None:
    if tiles < world:
        raise NSTError(
            f"engine.tile={tile} makes {tiles} tile(s) of this image, fewer than the {world} devices: set a smaller "
            "engine.tile"
        )


class Collectives:
    """model/tiles.py's ``Reduce`` over torch.distributed's default group (Lightning's: gloo on CPU, NCCL on CUDA),
    and the gathers of a split batch. Every rank must make the same calls in the same order."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    @staticmethod
    def _device() -> torch.device:
        if dist.get_backend() == "nccl":  # NCCL exchanges CUDA tensors only
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def sum(self, tensor: Tensor) -> Tensor:
        out = tensor.to(self._device(), copy=True)
        dist.all_reduce(out)
        return out.to(tensor.device)

    def gather(self, tensor: Tensor) -> Tensor:
        """Every rank's ``tensor`` concatenated along dimension 1, in rank order; their sizes there may differ."""
        size = torch.tensor([tensor.shape[1]], device=self._device())
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        dist.all_gather(sizes, size)
        return self.gather_sized(tensor, [int(s) for s in sizes], 1)

    def gather_sized(self, tensor: Tensor, sizes: list[int], dim: int) -> Tensor:
        """Every rank's ``tensor`` concatenated along ``dim``, rank r's being ``sizes[r]`` long there: padded to the
        longest for all_gather, which takes equal shapes, then cut back."""
        flag = tensor.dtype == torch.bool  # carried as bytes: not every backend gathers booleans
        local = tensor.to(self._device(), torch.uint8 if flag else tensor.dtype)
        shape = list(local.shape)
        shape[dim] = max(sizes)
        padded = local.new_zeros(shape)
        padded.narrow(dim, 0, local.shape[dim]).copy_(local)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        whole = torch.cat([part.narrow(dim, 0, n) for part, n in zip(parts, sizes, strict=True)], dim)
        return whole.to(tensor.device, torch.bool if flag else tensor.dtype)


@dataclass(frozen=True)
class Share:
    """This rank's images of a batch split across ranks: images [start, stop) of ``sum(sizes)``, each rank's share
    contiguous and in rank order."""

    rank: int
    sizes: tuple[int, ...]
    collectives: Collectives

    @classmethod
    def of(cls, images: int, world: int, rank: int) -> Share:
        """As even as whole images allow: the first ``images % world`` ranks take one more."""
        sizes = tuple(images // world + (r < images % world) for r in range(world))
        return cls(rank, sizes, Collectives(rank, world))

    @property
    def part(self) -> slice:
        start = sum(self.sizes[: self.rank])
        return slice(start, start + self.sizes[self.rank])

    def whole(self, tensor: Tensor, dim: int = 0) -> Tensor:
        """This rank's part of a batch's tensor (images along ``dim``) -> the whole batch's, on every rank."""
        return self.collectives.gather_sized(tensor, list(self.sizes), dim)

    def whole_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A state (the module's, or the optimiser's state of the image) for the whole batch: a tensor with
        dimensions is per image along its first; a number or a 0-d tensor (a step count) is the same everywhere."""
        return {k: self.whole(v) if isinstance(v, Tensor) and v.dim() else v for k, v in state.items()}

    def own_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The whole batch's state -> this rank's images' part of it."""
        return {k: v[self.part] if isinstance(v, Tensor) and v.dim() else v for k, v in state.items()}


def joblib_devices(trainer: Mapping[str, Any], job: int, gpus: int) -> list[int] | None:
    """``trainer.devices`` for job ``job`` of a sweep whose jobs run side by side on a machine with ``gpus`` GPUs
    (hydra/launcher=joblib): a job that asks for one GPU gets its own, dealt in turn (the job number modulo the GPU
    count) instead of all on the first; None where the job asks for something else (left as it is)."""
    if gpus < 2 or str(trainer.get("accelerator", "auto")) not in ("auto", "gpu", "cuda"):
        return None
    if str(trainer.get("devices", 1)) != "1":
        return None
    return [job % gpus]
