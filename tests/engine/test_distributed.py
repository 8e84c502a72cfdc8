"""Several devices, piece by piece: how a batch is split across ranks, what the ranks exchange (a real 2-process
gloo group), which tiles each rank takes, and the one-line refusals of what several devices cannot run."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nst_lightning.engine import distributed
from nst_lightning.engine.distributed import Collectives, IndependentDDP, Share
from nst_lightning.model import tiles
from nst_lightning.util import ranks
from nst_lightning.util.errors import NSTError

CPU2 = {"accelerator": "cpu", "devices": 2}

# ------------------------------------------------------------------------------------------------------------------
# A batch split across ranks
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "world", "sizes"), [(4, 2, (2, 2)), (3, 2, (2, 1)), (5, 3, (2, 2, 1)), (2, 2, (1, 1))]
)
def test_a_batch_is_split_into_contiguous_shares_in_rank_order(images, world, sizes):
    shares = [Share.of(images, world, rank) for rank in range(world)]
    assert all(share.sizes == sizes for share in shares)
    covered = [i for share in shares for i in range(images)[share.part]]
    assert covered == list(range(images))  # every image once, in order


def test_own_state_takes_this_ranks_images_and_keeps_the_counters():
    share = Share.of(3, 2, 1)
    state = {"x_prev": torch.arange(6.0).view(3, 2), "f_prev": torch.tensor([1.0, 2.0, 3.0]), "step": torch.tensor(7)}
    own = share.own_state({**state, "epoch": 4})
    assert own["x_prev"].tolist() == [[4.0, 5.0]] and own["f_prev"].tolist() == [3.0]
    assert int(own["step"]) == 7 and own["epoch"] == 4  # the same on every rank: not split


# ------------------------------------------------------------------------------------------------------------------
# What the ranks exchange: a real gloo group of 2 processes
# ------------------------------------------------------------------------------------------------------------------


def _exchange(rank: int, world: int, folder: str) -> None:
    """One rank of the group: every exchange of Collectives and Share, its results saved for the test to read."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    try:
        collectives = Collectives(rank, world)
        share = Share.of(3, world, rank)  # rank 0: images 0 and 1; rank 1: image 2
        own = torch.arange(3.0)[share.part].view(-1, 1, 1) * 10 + rank
        state = {"x_prev": own.flatten(1), "f_prev": own.flatten(), "n": torch.tensor(5)}
        out = {
            "sum": collectives.sum(torch.tensor([1.0, rank + 1.0])),
            "gather": collectives.gather(torch.full((2, rank + 1), float(rank))),  # unequal along dimension 1
            "mask": collectives.gather_sized(torch.tensor([[rank == 0, True]]), [1, 1], 0),
            "whole": share.whole(own),
            "whole_state": share.whole_state(state),
        }
        out["round_trip"] = share.own_state(out["whole_state"])
        torch.save(out, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def exchanged(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("gloo")
    mp.spawn(_exchange, args=(2, str(folder)), nprocs=2, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


def test_sum_is_the_same_total_on_every_rank(exchanged):
    for out in exchanged:
        assert out["sum"].tolist() == [2.0, 3.0]


def test_gather_concatenates_unequal_parts_in_rank_order(exchanged):
    for out in exchanged:
        assert out["gather"].tolist() == [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
        assert out["mask"].dtype == torch.bool and out["mask"].tolist() == [[True, True], [False, True]]


def test_a_split_batch_is_gathered_whole_and_split_back(exchanged):
    for rank, out in enumerate(exchanged):
        assert out["whole"].flatten().tolist() == [0.0, 10.0, 21.0]  # images 0, 1 from rank 0, image 2 from rank 1
        assert out["whole_state"]["f_prev"].tolist() == [0.0, 10.0, 21.0]
        assert out["whole_state"]["x_prev"].shape == (3, 1) and int(out["whole_state"]["n"]) == 5
        assert out["round_trip"]["f_prev"].tolist() == ([0.0, 10.0] if rank == 0 else [21.0])


# ------------------------------------------------------------------------------------------------------------------
# One image's tiles across ranks
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_take_disjoint_tiles_that_cover_the_image(world):
    plan = tiles.tiling(96, 128, 32, 16, 80)
    taken = [tiles.mine(plan, SimpleNamespace(rank=r, world=world)) for r in range(world)]
    owned = [tile.own for part in taken for tile in part]
    assert sorted(owned) == sorted(tile.own for tile in plan.tiles) and len(set(owned)) == len(owned) == 12
    assert max(map(len, taken)) - min(map(len, taken)) <= 1  # as even as the count allows


# ------------------------------------------------------------------------------------------------------------------
# Settings: how many processes, which strategy, and the refusals
# ------------------------------------------------------------------------------------------------------------------


def test_world_size_counts_the_processes_lightning_starts():
    assert distributed.world_size({"accelerator": "cpu", "devices": 1}) == 1
    assert distributed.world_size(CPU2) == 2
    assert distributed.world_size({"accelerator": "cpu", "devices": 3}) == 3


def test_ddp_runs_without_the_wrapper_that_would_average_the_images():
    assert isinstance(distributed.lightning_strategy("ddp", 2), IndependentDDP)
    assert isinstance(distributed.lightning_strategy("auto", 2), IndependentDDP)
    assert distributed.lightning_strategy("auto", 1) == "auto"


@pytest.fixture
def from_the_cli(monkeypatch):
    """As if this process were ``python -m nst_lightning``, the entry point Lightning can start again per rank."""
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", SimpleNamespace(name="nst_lightning.__main__"))


def test_one_device_is_never_refused():
    assert distributed.check_devices({"accelerator": "cpu", "devices": 1}, 1, tiled=False) == 1


def test_several_devices_are_refused_outside_the_command_line():
    with pytest.raises(NSTError, match=r"trainer.devices: 2 devices run from the command line .*use one device"):
        distributed.check_devices(CPU2, 4, tiled=False)


@pytest.mark.parametrize(
    ("trainer", "images", "tiled", "message"),
    [
        (CPU2, 1, False, r"one untiled image runs on one device, not 2: add engine.tile=<px>"),
        ({**CPU2, "devices": 3}, 2, False, r"a batch of 2 images cannot fill 3 devices .*trainer.devices=2 or fewer"),
        ({**CPU2, "strategy": "fsdp"}, 2, False, r"trainer.strategy=fsdp cannot share a run .*trainer.strategy=ddp"),
        ({**CPU2, "num_nodes": 2}, 2, False, r"trainer.num_nodes=2: a run shares the devices of one machine only"),
    ],
)
def test_what_several_devices_cannot_run_is_refused_in_one_line(from_the_cli, trainer, images, tiled, message):
    with pytest.raises(NSTError, match=message) as info:
        distributed.check_devices(trainer, images, tiled)
    assert "\n" not in str(info.value)


def test_a_tiled_image_and_a_batch_run_on_two_devices(from_the_cli):
    assert distributed.check_devices(CPU2, 1, tiled=True) == 2
    assert distributed.check_devices({**CPU2, "strategy": "ddp"}, 3, tiled=False) == 2


def test_too_few_tiles_for_the_devices_is_refused():
    distributed.check_tiles(2, 2, 32)
    with pytest.raises(NSTError, match=r"engine.tile=256 makes 1 tile\(s\) of this image, fewer than the 2 devices"):
        distributed.check_tiles(1, 2, 256)


def test_the_rank_comes_from_the_launchers_environment(monkeypatch):
    for name in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert ranks.launched_rank() == 0 and not ranks.helper()
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's launcher, for the processes it starts
    assert ranks.launched_rank() == 1 and ranks.helper()
    monkeypatch.setenv("RANK", "3")  # torchrun, SLURM: the global rank wins
    assert ranks.launched_rank() == 3


# ------------------------------------------------------------------------------------------------------------------
# Separate jobs of a sweep, one GPU each (hydra/launcher=joblib)
# ------------------------------------------------------------------------------------------------------------------


def test_joblib_jobs_are_dealt_one_gpu_each():
    trainer = {"accelerator": "auto", "devices": 1}
    assert [distributed.joblib_devices(trainer, job, 4) for job in range(6)] == [[0], [1], [2], [3], [0], [1]]


@pytest.mark.parametrize(
    ("trainer", "gpus"),
    [({"accelerator": "auto", "devices": 1}, 1), ({"accelerator": "cpu", "devices": 1}, 4), ({"devices": 2}, 4)],
)
def test_joblib_leaves_other_device_settings_alone(trainer, gpus):
    assert distributed.joblib_devices(trainer, 3, gpus) is None
