"""The step as an engine: no host synchronisation, divergence handled on the device, every step's losses logged
through the device buffer, and (CUDA only) a captured graph that equals the eager step."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils._python_dispatch import TorchDispatchMode

from nst_lightning.engine.run import build_module, run

HOST_READS = {
    "aten._local_scalar_dense",  # .item(), float(t), bool(t), Python `if` on a tensor
    "aten.nonzero",  # torch.nonzero, boolean-mask indexing
    "aten.is_nonzero",
    "aten.item",
    "aten.masked_select",
    "aten.equal",
}

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class NoHostReads(TorchDispatchMode):
    """Fails on any op that makes the host wait for a tensor's value (on CUDA: a device synchronisation)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in HOST_READS or (name.startswith("aten.index") and any(_is_bool(a) for a in _flat(args))):
            raise AssertionError(f"host read in the step: {name}")
        return func(*args, **(kwargs or {}))


def _flat(args):
    for a in args:
        if isinstance(a, list | tuple):
            yield from _flat(a)
        else:
            yield a


def _is_bool(a) -> bool:
    return isinstance(a, torch.Tensor) and a.dtype == torch.bool


def _ready(module):
    module.configure_optimizers()
    module.on_fit_start()
    return module


@pytest.mark.parametrize("sweep", [[], ["batch_sweep.ratio=[1e-3,1e-1]", "batch_sweep.tv_weight=[0,1]"]])
def test_steps_read_nothing_back_from_the_device(make_cfg, sweep):
    # L-BFGS, ours. (torch's Adam reads its step count back on a CPU; on CUDA it runs capturable=True, which keeps
    # it on the device: the CUDA test below covers that.)
    module = _ready(build_module(make_cfg(*sweep)))
    module._eager_step()  # the first step allocates the optimiser's state
    before = module.image.detach().clone()
    with NoHostReads():
        for _ in range(3):
            module._eager_step()
    assert not torch.equal(before, module.image.detach())  # it did optimise
    assert int(module.step_count) == 4


def test_the_host_read_detector_detects(make_cfg):
    module = _ready(build_module(make_cfg()))
    with NoHostReads(), pytest.raises(AssertionError, match="host read"):
        float(module.image.sum())


def test_divergence_is_recorded_and_undone_on_the_device(make_cfg):
    module = _ready(build_module(make_cfg("batch_sweep.seed=[0,1,2]")))
    kept = module.image[1].detach().clone()
    module._eager_step()  # step 0 evaluates the start (finite), then moves
    with torch.no_grad():
        module.image[1, 0, 0, 0] = float("nan")  # image 1 breaks: its evaluation at step 1 is not finite
    with NoHostReads():
        module._eager_step()
        module._eager_step()
    assert module.active.tolist() == [True, False, True]
    assert module.diverged_at.tolist() == [-1, 1, -1]
    assert torch.equal(module.image[1], kept)  # the last finite image, and it stays there
    assert torch.isfinite(module.image).all()


def test_every_step_is_logged_through_the_device_buffer(make_cfg, tmp_path):
    run(make_cfg("steps=10", "engine.log_every=4"), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("loss/total")]
    assert steps == list(range(10))
    totals = [e.value for e in events.Scalars("loss/total")]
    assert totals[-1] < totals[0]
    assert {"loss/content", "loss/style", "loss/style/conv1_1"} <= set(events.Tags()["scalars"])


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_cuda_steps_never_synchronise_and_the_graph_equals_the_eager_step(make_cfg, optimizer):
    cfg = make_cfg("size=64", "trainer.accelerator=gpu", f"optimizer={optimizer}")
    eager = build_module(cfg).cuda()
    graphed = build_module(cfg).cuda()
    graphed.engine = type(graphed.engine)(**{**graphed.engine.__dict__, "cuda_graph": True})
    eager.engine = type(eager.engine)(**{**eager.engine.__dict__, "cuda_graph": False})
    for module in (eager, graphed):
        _ready(module)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(8):
                module._step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert graphed.graph is not None
    torch.testing.assert_close(graphed.image, eager.image, rtol=1e-4, atol=1e-4)
