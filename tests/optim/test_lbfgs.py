"""nst_lightning.optim.lbfgs: agreement with torch.optim.LBFGS where both are sound, invariance to the loss scale and to
the pixel units, independence of the images of a batch, the stall and explosion cases torch gets wrong, non-finite
images, no host synchronisation, and checkpoint round trips."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from nst_lightning.optim.lbfgs import FIRST_STEP, LBFGS, MAX_STEP


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny: one thread runs them ~40x faster than two on a shared, busy CPU (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------------------
# Problems and a driver
# ------------------------------------------------------------------------------------------------------------------


def quadratic_problem(seed: int, n: int = 50, cond: float = 100.0):
    """f(x) = x'Ax/2 - b'x + 0.01 sum x^4, eigenvalues of A log-spaced in [1, cond], float64; x0 random.

    Conditioned so that 50 steps do not converge: torch keeps accepting every pair (its s'y stays above its
    absolute 1e-10), so both methods see the same pairs.
    """
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))
    a = q @ torch.diag(torch.logspace(0, math.log10(cond), n, dtype=torch.float64)) @ q.T
    b = torch.randn(n, dtype=torch.float64, generator=gen)
    x0 = torch.randn(1, n, dtype=torch.float64, generator=gen)

    def f(x):  # (K, n) -> (K,)
        return 0.5 * ((x @ a) * x).sum(1) - x @ b + 0.01 * x.pow(4).sum(1)

    return f, x0


def style_problem(size: int, dtype: torch.dtype = torch.float32, seed: int = 0, scale: float = 1e10):
    """A Gatys-like style loss from plain torch ops: Gram matrices (over positions) of 16 fixed random zero-mean 3x3
    'edge' filters + ReLU, matched to those of saturated red/blue stripes; white-noise start in [0, 1]. Scaled so
    that the starting loss is `scale` (~1e10, like the paper's). (K, 3, size, size) -> (K,)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(16, 3, 3, 3, generator=gen, dtype=dtype) / 3
    w = w - w.mean((1, 2, 3), keepdim=True)

    def gram(x):
        feats = F.relu(F.conv2d(x, w, padding=1)).flatten(2)
        return feats @ feats.transpose(1, 2) / feats.shape[-1]

    stripes = torch.zeros(1, 3, size, size, dtype=dtype)
    stripes[:, 0, :, 0::4] = stripes[:, 0, :, 1::4] = 1.0
    stripes[:, 2, :, 2::4] = stripes[:, 2, :, 3::4] = 1.0
    target = gram(stripes)
    x0 = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    unscaled = ((gram(x0) - target) ** 2).sum().item()

    def f(x):
        return (scale / unscaled) * ((gram(x) - target) ** 2).sum((1, 2))

    return f, x0


def closure_for(opt: torch.optim.Optimizer, p: torch.Tensor, f, poison: torch.Tensor | None = None):
    """One evaluation of the K losses and their gradients. `poison` (K,), added times sum(x), makes losses NaN."""

    def closure():
        opt.zero_grad()
        losses = f(p)
        if poison is not None:
            losses = losses + poison * p.flatten(1).sum(1)
        losses.sum().backward()
        return losses.detach()

    return closure


def run(f, x0: torch.Tensor, steps: int, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterates (steps, K, ...) after each step and the losses (steps, K) evaluated by each step."""
    p = torch.nn.Parameter(x0.clone())
    opt = LBFGS([p], **options)
    closure = closure_for(opt, p, f)
    xs, losses = [], []
    for _ in range(steps):
        losses.append(opt.step(closure))
        xs.append(p.detach().clone())
    return torch.stack(xs), torch.stack(losses)


def run_torch(f, x0: torch.Tensor, steps: int, history_size: int = 100, normalise: bool = False):
    """torch.optim.LBFGS as the product used it: one iteration per step, no line search, never stopping early."""
    p = torch.nn.Parameter(x0.clone())
    opt = torch.optim.LBFGS(
        [p], lr=1, max_iter=1, history_size=history_size, line_search_fn=None, tolerance_grad=-1, tolerance_change=-1
    )
    scale = f(x0).sum().item() if normalise else 1.0

    def closure():
        opt.zero_grad()
        loss = f(p).sum() / scale
        loss.backward()
        return loss

    xs, losses = [], []
    for _ in range(steps):
        losses.append(opt.step(closure).detach() * scale)
        xs.append(p.detach().clone())
    return torch.stack(xs), torch.stack(losses), opt.state[p]


def torch_first_step(f, x0: torch.Tensor) -> float:
    """Our first_step that reproduces torch's first step lr * min(1, 1/|g|_1) * g (the largest pixel change)."""
    g = torch.func.grad(lambda x: f(x).sum())(x0)
    return min(1.0, 1.0 / g.abs().sum().item()) * g.abs().max().item()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|"""
    return ((a - b).abs().max() / b.abs().max()).item()


# ------------------------------------------------------------------------------------------------------------------
# 1. The same method as torch's where both are sound
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [5, 100])  # 5: the ring buffer wraps around 9 times in 50 steps
def test_same_iterates_as_torch_lbfgs(m):
    f, x0 = quadratic_problem(seed=0)
    ours, ours_losses = run(f, x0, 50, history_size=m, first_step=torch_first_step(f, x0), max_step=1e30)
    theirs, theirs_losses, torch_state = run_torch(f, x0, 50, history_size=m)
    assert len(torch_state["old_dirs"]) == min(49, m)  # torch accepted every pair: same information as ours
    # measured: 6e-14 (m = 100) and 3e-15 (m = 5): the compact form equals torch's two-loop recursion
    assert relative(ours, theirs) < 1e-9
    assert relative(ours_losses[:, 0], theirs_losses) < 1e-9
    assert ours_losses[-1].item() < 0.1 * ours_losses[0].item()  # and it does optimise


# ------------------------------------------------------------------------------------------------------------------
# 2. Invariance to the loss scale and to the pixel units
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1e-6, 1e6])
@pytest.mark.parametrize("problem", ["quadratic", "style"])
def test_iterates_do_not_depend_on_the_loss_scale(problem, c):
    if problem == "quadratic":
        f, x0 = quadratic_problem(seed=1)
    else:  # non-convex, concave at the start: exercises the steepest-descent growth and the step cap too
        f, x0 = style_problem(16, torch.float64)
    xs, _ = run(f, x0, 30, history_size=10)
    xs_scaled, _ = run(lambda x: c * f(x), x0, 30, history_size=10)
    assert relative(xs_scaled, xs) < 1e-11  # measured: 1e-13 to 3e-13 (the rounding of the scaled loss only)


@pytest.mark.parametrize("problem", ["quadratic", "style"])
def test_iterates_in_0_255_pixels_are_255_times_those_in_0_1(problem):
    if problem == "quadratic":
        f, x0 = quadratic_problem(seed=2)
    else:
        f, x0 = style_problem(16, torch.float64)
    xs, _ = run(f, x0, 30, history_size=10)
    options = {"first_step": 255 * FIRST_STEP, "max_step": 255 * MAX_STEP, "history_size": 10}
    xs_255, _ = run(lambda x: f(x / 255), 255 * x0, 30, **options)
    assert relative(xs_255 / 255, xs) < 1e-11  # measured: 8e-14 (quadratic), 2e-14 (style)


# ------------------------------------------------------------------------------------------------------------------
# 3. A batch is K independent runs
# ------------------------------------------------------------------------------------------------------------------


def test_each_image_of_a_batch_follows_its_own_run():
    problems = [quadratic_problem(seed) for seed in (3, 4, 5)]

    def batched(x):  # image k sees problem k
        return torch.cat([f(x[k : k + 1]) for k, (f, _) in enumerate(problems)])

    x0 = torch.cat([x0 for _, x0 in problems])
    together, _ = run(batched, x0, 50, history_size=7)
    for k, (f, x0_k) in enumerate(problems):
        alone, _ = run(f, x0_k, 50, history_size=7)
        assert relative(together[:, k], alone[:, 0]) < 1e-12  # measured: 0 (bitwise equal)


def test_batch_of_style_images_and_channels_last_layout():
    f, x0 = style_problem(16, torch.float64)
    gen = torch.Generator().manual_seed(10)
    noise = torch.rand(2, *x0.shape[1:], generator=gen, dtype=x0.dtype)
    starts = torch.cat([x0, noise[:1], 0.5 + 0.1 * noise[1:]])
    together, _ = run(f, starts, 20, history_size=10)
    for k in range(3):
        alone, _ = run(f, starts[k : k + 1], 20, history_size=10)
        assert relative(together[:, k], alone[:, 0]) < 1e-12  # measured: 0
    # A channels-last image: same method (each image's values in memory order), only the rounding differs.
    nhwc, _ = run(f, starts.contiguous(memory_format=torch.channels_last), 20, history_size=10)
    assert relative(nhwc, together) < 1e-9  # measured: 8e-15


# ------------------------------------------------------------------------------------------------------------------
# 4. The stall: torch on L / L_0 crawls, ours does not
# ------------------------------------------------------------------------------------------------------------------


def test_white_noise_to_saturated_stripes_falls_100x_in_100_steps():
    # 64 px (N = 12288 values): the product's smallest size. At the white-noise start the loss is concave (the
    # noise's Gram is far below the stripes'), so the first curvature pairs are negative and rejected by both
    # methods. torch then keeps stepping by g of L / L_0, whose entries are ~1e-3 here (at 16 px they are ~15x
    # larger and it escapes), and crawls; ours steps in pixel units and doubles the step while the loss keeps
    # falling without positive curvature.
    # Measured (float32): ours L_100 / L_0 = 1.30e-4 (a 7700x fall; steepest descent at first, the step doubling
    # from 2/255 each time until max_step caps it; 1.24e-4 with max_step 1.0; with a fixed first_step fallback
    # instead, as first written, it crawled for ~65 steps and ended at 9.1e-4). torch L_100 / L_0 = 0.927 (a 7%
    # fall, 0 pairs accepted, no step moved a pixel by more than 1.1e-3 of the intensity range).
    f, x0 = style_problem(64)
    xs, losses = run(f, x0, 100)
    l0 = losses[0, 0].item()
    assert l0 == pytest.approx(1e10, rel=1e-5)
    assert torch.isfinite(losses).all()
    assert f(xs[-1]).item() / l0 < 1e-2
    # The first steps: steepest descent, the largest pixel change 2/255, 4/255, ..., 32/255, then max_step.
    changes = torch.cat([xs[:1] - x0, xs[1:7] - xs[:6]]).abs().flatten(1).amax(1)
    expected = (FIRST_STEP * 2.0 ** torch.arange(7.0)).clamp(max=MAX_STEP)
    torch.testing.assert_close(changes, expected, rtol=1e-4, atol=0)
    theirs, _, torch_state = run_torch(f, x0, 100, normalise=True)
    assert f(theirs[-1]).item() / l0 > 0.5
    assert len(torch_state["old_dirs"]) == 0


# ------------------------------------------------------------------------------------------------------------------
# 5. An exploding start
# ------------------------------------------------------------------------------------------------------------------


def test_exploding_start_stays_finite_and_decreases():
    # 1e12 sum(x^4 - x) from near 0, where the quartic is flat: the first pairs see almost no curvature, so the
    # quasi-Newton step is huge and lands where x^4 overflows. Minimum: 768 * 1e12 * (x*^4 - x*), x* = 4^(-1/3).
    # Measured (float32): ours reaches the minimum (-3.63e14) to 2e-7 with every loss finite (start 9.5e8, the
    # largest on the way 9.0e14); without the step cap it ends at a loss of 2.3e29; torch on the raw loss: inf at
    # its third evaluation, NaN from the fourth on.
    x0 = (torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.5) * 1e-3

    def f(x):
        return 1e12 * (x.pow(4) - x).flatten(1).sum(1)

    x_star = 4 ** (-1 / 3)
    minimum = 768 * 1e12 * (x_star**4 - x_star)
    xs, losses = run(f, x0, 100)
    assert torch.isfinite(losses).all() and torch.isfinite(xs).all()
    final = f(xs[-1]).item()
    assert final < losses[0, 0].item()
    assert final == pytest.approx(minimum, rel=1e-4)

    _, uncapped = run(f, x0, 100, max_step=math.inf)
    assert not uncapped.max().item() < 1e20  # (NaN counts as not below)
    _, theirs, _ = run_torch(f, x0, 100)
    assert not torch.isfinite(theirs).all()


# ------------------------------------------------------------------------------------------------------------------
# 6. Non-finite and inactive images
# ------------------------------------------------------------------------------------------------------------------


def _image_state(opt: LBFGS, p: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    return {key: value[k].clone() for key, value in opt.state[p].items()}


def test_a_non_finite_image_is_left_alone_and_the_others_proceed_as_alone():
    problems = [quadratic_problem(seed) for seed in (6, 7, 8)]

    def batched(x):
        return torch.cat([f(x[k : k + 1]) for k, (f, _) in enumerate(problems)])

    p = torch.nn.Parameter(torch.cat([x0 for _, x0 in problems]))
    opt = LBFGS([p], history_size=5)
    poison = torch.zeros(3, dtype=torch.float64)
    closure = closure_for(opt, p, batched, poison)
    xs = []
    for step in range(30):
        bad = step in (7, 8, 20)  # image 1 evaluates to NaN (loss and gradient) at these steps
        poison[1] = math.nan if bad else 0.0
        before_x, before_state = p.detach().clone(), _image_state(opt, p, 1) if step else None
        losses = opt.step(closure)
        xs.append(p.detach().clone())
        assert torch.isnan(losses[1]).item() == bad
        if bad:
            assert torch.equal(p[1], before_x[1])  # not moved
            after_state = _image_state(opt, p, 1)
            assert all(torch.equal(after_state[key], before_state[key]) for key in before_state)  # history untouched
    xs = torch.stack(xs)
    assert torch.isfinite(xs).all()
    for k in (0, 2):
        f, x0 = problems[k]
        alone, _ = run(f, x0, 30, history_size=5)
        assert relative(xs[:, k], alone[:, 0]) < 1e-12  # measured: 0
    # Image 1 resumes with the pair spanning its bad evaluations and keeps optimising.
    assert batched(xs[-1])[1].item() < batched(xs[6])[1].item()


def test_inactive_images_do_not_move():
    f, x0 = style_problem(16)
    p = torch.nn.Parameter(torch.cat([x0, x0.flip(-1)]))
    opt = LBFGS([p])
    closure = closure_for(opt, p, f)
    opt.step(closure)
    before = p.detach().clone()
    opt.step(closure, active=torch.tensor([False, True]))
    assert torch.equal(p[0], before[0])
    assert not torch.equal(p[1], before[1])
    opt.step(closure)
    assert not torch.equal(p[0], before[0])  # and moves again when active


# ------------------------------------------------------------------------------------------------------------------
# 7. No host synchronisation
# ------------------------------------------------------------------------------------------------------------------


class HostSyncError(RuntimeError):
    pass


class ForbidHostSync(TorchDispatchMode):
    """Raises on every op that reads a device value on the host or needs one to size its output."""

    BANNED = frozenset({"_local_scalar_dense", "item", "nonzero", "nonzero_static", "is_nonzero", "masked_select"})
    INDEXING = frozenset({"index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index", "_unsafe_index_put"})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.BANNED:
            raise HostSyncError(name)
        if name in self.INDEXING:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(i is not None and i.dtype == torch.bool for i in indices):
                raise HostSyncError(f"{name} with a boolean mask")
        return func(*args, **(kwargs or {}))


def test_the_guard_catches_syncs():
    x = torch.ones(3)
    for sync in (lambda: x.sum().item(), lambda: bool(x.sum()), lambda: x[x > 0], lambda: x.nonzero()):
        with ForbidHostSync(), pytest.raises(HostSyncError):
            sync()


def test_step_never_synchronises():
    problems = [quadratic_problem(seed) for seed in (9, 10)]

    def f(x):
        return torch.cat([f_k(x[k : k + 1]) for k, (f_k, _) in enumerate(problems)])

    p = torch.nn.Parameter(torch.cat([x0 for _, x0 in problems]))
    opt = LBFGS([p], history_size=4)
    poison = torch.zeros(2, dtype=torch.float64)
    closure = closure_for(opt, p, f, poison)  # plain tensor ops: no sync of its own
    opt.step(closure)  # the first step allocates the history
    everyone, first_only = torch.tensor([True, True]), torch.tensor([True, False])
    with ForbidHostSync():
        for step in range(8):  # the ring buffer wraps around; a NaN image and an inactive one on the way
            poison[1:].fill_(math.nan if step == 3 else 0.0)
            opt.step(closure, active=first_only if step == 5 else everyone)
    assert torch.isfinite(p).all()
    assert opt.state[p]["n_pairs"].min().item() > 4


# ------------------------------------------------------------------------------------------------------------------
# 8. Checkpoints
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_dict_round_trip_resumes_exactly(dtype):
    f, x0 = style_problem(16, dtype)
    starts = torch.cat([x0, torch.rand(x0.shape, generator=torch.Generator().manual_seed(11), dtype=dtype)])
    straight, _ = run(f, starts, 10, history_size=4)

    p = torch.nn.Parameter(starts.clone())
    opt = LBFGS([p], history_size=4)
    closure = closure_for(opt, p, f)
    for _ in range(5):
        opt.step(closure)
    buffer = io.BytesIO()
    torch.save({"image": p.detach(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    p2 = torch.nn.Parameter(saved["image"].clone())
    opt2 = LBFGS([p2], history_size=4)
    opt2.load_state_dict(copy.deepcopy(saved["optimizer"]))
    assert opt2.state[p2]["n_pairs"].dtype == torch.long and opt2.state[p2]["has_prev"].dtype == torch.bool
    closure2 = closure_for(opt2, p2, f)
    for _ in range(5):
        opt2.step(closure2)
    assert torch.equal(p2.detach(), straight[-1])


def test_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="exactly one"):
        LBFGS([torch.nn.Parameter(torch.zeros(1, 2)), torch.nn.Parameter(torch.zeros(1, 2))])
    with pytest.raises(ValueError):
        LBFGS([torch.nn.Parameter(torch.zeros(1, 2))], first_step=0.0)
    p = torch.nn.Parameter(torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match="backward"):
        LBFGS([p]).step(lambda: p.sum().detach())


def test_a_bfloat16_history_takes_half_the_memory_and_follows_the_float32_one():
    """The history in bfloat16 (2 bytes a number): the same problem reaches nearly the same loss."""
    torch.manual_seed(0)
    a = torch.randn(40, 40, dtype=torch.float32)
    hessian = a @ a.T / 40 + torch.eye(40)
    target = torch.randn(1, 40)

    def f(x):
        d = x - target
        return 0.5 * ((d @ hessian) * d).sum(1)

    results = {}
    for dtype in ("float32", "bfloat16"):
        x = torch.zeros(1, 40, requires_grad=True)
        opt = LBFGS([x], history_size=10, history_dtype=dtype)

        def closure(x=x):
            x.grad = None
            loss = f(x)
            loss.sum().backward()
            return loss.detach()

        losses = [opt.step(closure) for _ in range(30)]
        history = opt.state[x]["history"]
        results[dtype] = (float(losses[-1]), history.dtype, history.element_size())
    assert results["float32"][1] == torch.float32 and results["bfloat16"][1] == torch.bfloat16
    assert results["bfloat16"][2] * 2 == results["float32"][2]
    start = float(f(torch.zeros(1, 40)))
    assert results["float32"][0] < 1e-6 * start and results["bfloat16"][0] < 1e-3 * start


def test_a_bfloat16_history_comes_back_from_a_checkpoint_as_it_was():
    x = torch.zeros(2, 3, 4, 4, requires_grad=True)
    opt = LBFGS([x], history_size=3, history_dtype="bfloat16")

    def closure():
        x.grad = None
        loss = (x - 0.3).pow(2).flatten(1).sum(1)
        loss.sum().backward()
        return loss.detach()

    opt.step(closure)
    opt.step(closure)
    again = LBFGS([x], history_size=3, history_dtype="bfloat16")
    again.load_state_dict(opt.state_dict())
    assert again.state[x]["history"].dtype == torch.bfloat16
    assert torch.equal(again.state[x]["history"], opt.state[x]["history"])
    assert again.state[x]["n_pairs"].dtype == torch.long


def test_products_with_a_bfloat16_history_are_taken_in_chunks_exactly(monkeypatch):
    from nst_lightning.optim import lbfgs

    monkeypatch.setattr(lbfgs, "CHUNK_BYTES", 4 * 2 * 6 * 7)  # 7 pixels a chunk: several chunks, one short
    hist = torch.randn(2, 6, 50).bfloat16()
    vectors, coef = torch.randn(2, 3, 50), torch.randn(2, 6)
    assert torch.allclose(lbfgs._times_history(vectors, hist), vectors @ hist.float().mT, rtol=1e-5, atol=1e-5)
    expected = (coef[:, None, :] @ hist.float()).squeeze(1)
    assert torch.allclose(lbfgs._combine_history(coef, hist, torch.float32), expected, rtol=1e-5, atol=1e-5)
