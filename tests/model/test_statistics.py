"""The style statistics of nst_lightning.model.statistics against closed forms and their defining properties.

Small float64 features throughout; the real network is not needed here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nst_lightning.model import statistics
from nst_lightning.model.losses import gram_over_m, style_layer_loss
from nst_lightning.model.objective import Objective, Weights
from nst_lightning.model.statistics import (
    MMD,
    MRF,
    GaussianW2,
    Gram,
    MeanStd,
    SlicedWasserstein,
    StyleStatistic,
    blend_statistics,
    draw_positions,
    draw_projections,
    mmd_kernel,
    mrf_matches,
    sliced_distance,
)
from nst_lightning.util.errors import NSTError

CLASSES: dict[str, type[StyleStatistic]] = {
    "gram": Gram,
    "mean_std": MeanStd,
    "mmd": MMD,
    "gaussian_w2": GaussianW2,
    "sliced_wasserstein": SlicedWasserstein,
    "mrf": MRF,
}
NAMES = tuple(CLASSES)
DISTRIBUTION_LOSSES = ("gram", "mean_std", "mmd", "gaussian_w2", "sliced_wasserstein")


def features(batch: int = 1, n: int = 4, h: int = 5, w: int = 6, seed: int = 0) -> torch.Tensor:
    """Positive, tie-free features (like rectified activations away from 0), float64."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, h, w, generator=gen, dtype=torch.float64) * 2 + 0.1


def make(name: str, style: torch.Tensor, **options) -> StyleStatistic:
    statistic = CLASSES[name](style, **options)
    return statistic.double() if style.dtype == torch.float64 else statistic


def evaluate(name: str, x: torch.Tensor, style: torch.Tensor, mask=None, step: int = 0, **options):
    """Targets once, this step's draws (float64 for the tests), the loss."""
    statistic = make(name, style, **options)
    statistic.begin_step(step, x.shape, x.device)
    _to_dtype(statistic, x.dtype)
    return statistic(x, mask)


def _to_dtype(statistic: StyleStatistic, dtype: torch.dtype) -> None:
    for name, buffer in statistic.named_buffers():
        if buffer.is_floating_point() and dtype == torch.float64:
            setattr(statistic, name, buffer.double())
    if getattr(statistic, "projections", None) is not None and dtype == torch.float64:
        statistic.projections = statistic.projections.double()
        statistic.style_sorted = (statistic.style.double() @ statistic.projections).sort(0).values


def permuted_positions(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    b, n, h, w = x.shape
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return x.flatten(2)[:, :, order].reshape(b, n, h, w)


# ------------------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences_in_float64(name, masked):
    style = features(seed=1, h=6, w=5)
    x = features(seed=2).requires_grad_(True)
    statistic = make(name, style)
    statistic.begin_step(0, x.shape, x.device)
    _to_dtype(statistic, torch.float64)
    mask = torch.rand(1, 1, 5, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64) if masked else None
    assert torch.autograd.gradcheck(lambda f: statistic(f, mask), (x,))


def test_mmd_gradient_on_a_subsample_of_positions():
    style, x = features(seed=1, h=6, w=5), features(seed=2).requires_grad_(True)
    statistic = make("mmd", style, max_positions=12, seed=0)
    statistic.begin_step(5, x.shape, x.device)
    assert torch.equal(statistic.positions, draw_positions(30, 12, seed=0, step=5))
    assert torch.autograd.gradcheck(lambda f: statistic(f), (x,))
    (grad,) = torch.autograd.grad(statistic(x).sum(), x)
    used = torch.zeros(30, dtype=torch.bool)
    used[statistic.positions] = True
    assert (grad.flatten(2)[..., ~used] == 0).all() and (grad.flatten(2)[..., used] != 0).any()


# --------------------------------------------------------------------------------------------- zero at the target


@pytest.mark.parametrize("name", NAMES)
def test_zero_when_the_generated_features_are_the_style_features(name):
    style = features(seed=5)
    loss = evaluate(name, style.clone(), style)
    scale = evaluate(name, features(seed=6), style)
    assert loss.shape == (1,) and scale.item() > 1e-3
    assert abs(loss.item()) < 1e-10 * max(1.0, scale.item())


def test_mmd_is_zero_on_the_same_subsample():
    style = features(seed=5, h=8, w=8)
    statistic = make("mmd", style, max_positions=20, seed=7)
    assert statistic.style.shape == (20, 4)
    statistic.begin_step(0, style.shape, style.device)  # the subsample the target drew
    assert abs(statistic(style).item()) < 1e-12
    statistic.begin_step(1, style.shape, style.device)
    assert statistic(style).item() > 1e-6


# ----------------------------------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("name", DISTRIBUTION_LOSSES)
def test_distribution_losses_ignore_where_the_features_are(name):
    style, x = features(seed=1, h=6, w=5), features(seed=2)
    loss = evaluate(name, x, style)
    assert torch.allclose(evaluate(name, permuted_positions(x), style), loss, rtol=1e-9, atol=1e-12)
    assert torch.allclose(evaluate(name, x, permuted_positions(style, seed=3)), loss, rtol=1e-9, atol=1e-12)


def test_mrf_depends_on_the_arrangement():
    style = features(seed=1, h=7, w=7)
    assert evaluate("mrf", permuted_positions(style), style).item() > 1e-3


# ----------------------------------------------------------------------------------------------------- closed forms


def orthogonal_features(means, scales, h: int = 4, w: int = 4) -> torch.Tensor:
    """Channels mean_c + scale_c * r_c with r_c orthogonal, zero-mean, unit-variance sign patterns (Walsh functions):
    the covariance is exactly diag(scale^2)."""
    hadamard = torch.tensor([[1.0]], dtype=torch.float64)
    while hadamard.shape[0] < h * w:
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)], 0)
    rows = hadamard[1 : len(means) + 1]  # row 0 is constant
    f = torch.tensor(means, dtype=torch.float64)[:, None] + torch.tensor(scales, dtype=torch.float64)[:, None] * rows
    return f.reshape(1, len(means), h, w)


def test_gaussian_w2_for_commuting_covariances_is_means_plus_deviations():
    x = orthogonal_features([1.0, 2.0, -1.0], [0.5, 2.0, 1.0])
    s = orthogonal_features([0.0, 2.5, 1.0], [1.5, 0.25, 1.0], h=8, w=4)
    expected = (1 + 0.25 + 4) + ((0.5 - 1.5) ** 2 + (2.0 - 0.25) ** 2 + 0.0)
    assert evaluate("gaussian_w2", x, s).item() * 3 == pytest.approx(expected, rel=1e-10)


def test_gaussian_w2_between_two_gaussian_samples_matches_numpy():
    rng = np.random.default_rng(0)
    n = 5
    a, b = rng.normal(size=(n, n)), rng.normal(size=(n, n))
    x = torch.from_numpy(rng.normal(size=(300, n)) @ a + 1.0).T.reshape(1, n, 15, 20)
    s = torch.from_numpy(rng.normal(size=(200, n)) @ b - 0.5).T.reshape(1, n, 10, 20)
    # independently: sample moments with numpy, tr((S_x S_s)^1/2) from the (real, positive) eigenvalues of S_x S_s
    xs, ss = x.reshape(n, -1).numpy(), s.reshape(n, -1).numpy()
    cx, cs = np.cov(xs, bias=True), np.cov(ss, bias=True)
    cross = np.sqrt(np.linalg.eigvals(cx @ cs).real.clip(0)).sum()
    expected = ((xs.mean(1) - ss.mean(1)) ** 2).sum() + np.trace(cx) + np.trace(cs) - 2 * cross
    assert evaluate("gaussian_w2", x, s).item() * n == pytest.approx(expected, rel=1e-9)


def test_gaussian_w2_of_an_image_against_itself_is_zero_in_float32():
    """The float64 moments keep the square root's rounding far below the spread, even with dead channels."""
    x = features(n=16, h=12, w=12, seed=3).float() * 100
    x[:, 5:9] = 0  # dead channels
    statistic = GaussianW2(x)
    assert abs(statistic(x).item()) < 1e-6 * statistic(features(n=16, h=12, w=12, seed=4).float() * 100).item()


def test_mmd_with_the_linear_kernel_is_the_squared_distance_of_the_means():
    x, s = features(seed=1), features(seed=2, h=7, w=3) * 1.5
    loss = evaluate("mmd", x, s, kernel="linear")
    expected = (x.mean((2, 3)) - s.mean((2, 3))).pow(2).sum() / 4  # divided by Z = N
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("style_size", [(5, 6), (7, 3)])
def test_mmd_with_the_squared_polynomial_kernel_is_the_gram_loss(style_size):
    """k(x, y) = (x.y)^2: MMD^2 = |G/M - A/K|_F^2 = 4 N^2 E_l (Li et al. 2017), also for different M and K."""
    x, s = features(seed=1), features(seed=2, h=style_size[0], w=style_size[1])
    loss = evaluate("mmd", x, s, kernel="polynomial", degree=2, offset=0.0)
    assert loss.item() == pytest.approx(style_layer_loss(x, gram_over_m(s)[0]).item(), rel=1e-9)


def test_mmd_equals_the_kernel_definition_term_by_term():
    x, s = features(seed=1, h=3, w=2), features(seed=2, h=2, w=2)
    xv, sv = x[0].flatten(1).T, s[0].flatten(1).T
    sigma2 = 0.5 * np.mean([((a - b) ** 2).sum().item() for i, a in enumerate(sv) for j, b in enumerate(sv) if i != j])

    def k(a, b):
        return math.exp(-((a - b) ** 2).sum().item() / (2 * sigma2))

    expected = (
        np.mean([k(a, b) for a in xv for b in xv])
        + np.mean([k(a, b) for a in sv for b in sv])
        - 2 * np.mean([k(a, b) for a in xv for b in sv])
    )
    assert evaluate("mmd", x, s, bandwidth=0.5).item() == pytest.approx(expected, rel=1e-9)
    assert mmd_kernel(xv, sv, "gaussian", sigma2).shape == (6, 4)


def test_mean_std_is_the_mean_over_channels_of_both_squared_differences():
    x, s = features(seed=1), features(seed=2, h=3, w=7)
    mu_x, mu_s = x.mean((2, 3)), s.mean((2, 3))
    sd_x, sd_s = x.std((2, 3), unbiased=False), s.std((2, 3), unbiased=False)
    expected = ((mu_x - mu_s) ** 2 + (sd_x - sd_s) ** 2).mean()
    assert evaluate("mean_std", x, s).item() == pytest.approx(expected.item(), rel=1e-6)


def _sliced(x, style, projections, mask=None):
    statistic = SlicedWasserstein(style).double()
    statistic.projections = projections
    statistic.style_sorted = (statistic.style @ projections).sort(0).values
    return statistic(x, mask)


def test_sliced_wasserstein_along_a_channel_is_the_1d_distance_and_matches_other_sample_counts():
    x, s = features(seed=1), features(seed=2)
    axis = torch.zeros(4, 1, dtype=torch.float64)
    axis[2] = 1
    expected = (x[0, 2].flatten().sort().values - s[0, 2].flatten().sort().values).pow(2).mean()
    assert _sliced(x, s, axis).item() == pytest.approx(expected.item(), rel=1e-12)
    # the style with every sample twice has the same distribution: the interpolated quantiles are exact
    doubled = torch.cat([x, x], -1)
    projections = draw_projections(4, 7, seed=0).double()
    assert _sliced(x, doubled, projections).item() < 1e-24
    # a style with fewer samples: the generated samples' levels are interpolated between the style's
    half = _sliced(x, s[..., :3], projections)
    assert half.item() > 0 and math.isfinite(half.item())


def test_sliced_wasserstein_without_autograd_sorts_a_few_projections_at_a_time_to_the_same_value():
    x, s = features(seed=1), features(seed=2)
    projections = draw_projections(4, 2 * statistics.SLICED_CHUNK + 3, seed=0).double()  # chunks of 8, 8 and 3
    mask = torch.rand(1, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for m in (None, mask):
        whole = _sliced(x.requires_grad_(), s, projections, m)
        with torch.no_grad():
            chunked = _sliced(x, s, projections, m)
        assert whole.requires_grad and not chunked.requires_grad
        assert chunked.item() == pytest.approx(whole.item(), rel=1e-12)
    assert sliced_distance.__doc__


def test_draw_projections_are_unit_and_reproducible():
    a, b, c = draw_projections(8, 5, 1, 2), draw_projections(8, 5, 1, 2), draw_projections(8, 5, 1, 3)
    assert a.shape == (8, 5) and torch.allclose(a.norm(dim=0), torch.ones(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    positions = draw_positions(100, 10, seed=0, step=0)
    assert positions.shape == (10,) and len(set(positions.tolist())) == 10 and (positions.diff() > 0).all()
    assert draw_positions(5, 10, seed=0).tolist() == [0, 1, 2, 3, 4]


def test_mrf_equals_explicit_nearest_patches():
    x, s = features(seed=1, n=3, h=6, w=5), features(seed=2, n=3, h=5, w=5)
    statistic = make("mrf", s)
    gen = F.unfold(x, 3)[0].T  # L, 27
    sty = F.unfold(s, 3)[0].T
    ncc = (gen / gen.norm(dim=1, keepdim=True)) @ (sty / sty.norm(dim=1, keepdim=True)).T
    nearest = ncc.argmax(1)
    expected = (gen - sty[nearest]).pow(2).sum(1).mean() / 27
    assert torch.equal(mrf_matches(x, statistic.normalised)[0], nearest)
    assert statistic(x).item() == pytest.approx(expected.item(), rel=1e-10)
    # a style patch cap: a seeded subsample of the patches
    capped = make("mrf", s, max_patches=4, seed=1)
    assert capped.patches.shape == (4, 27) and torch.equal(
        capped.patches, make("mrf", s, max_patches=4, seed=1).patches
    )
    assert capped(x).item() >= statistic(x).item() - 1e-12


# ------------------------------------------------------------------------------------------------------------ masks


@pytest.mark.parametrize("name", ["gram", "mean_std", "mmd", "gaussian_w2", "sliced_wasserstein"])
def test_a_binary_mask_selects_the_positions(name):
    style, x = features(seed=1), features(seed=2, w=8)
    mask = torch.zeros(1, 1, 5, 8, dtype=torch.float64)
    mask[..., :3] = 1
    assert torch.allclose(evaluate(name, x, style, mask), evaluate(name, x[..., :3].contiguous(), style), rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_a_mask_of_ones_is_no_mask(name):
    style, x = features(seed=1), features(seed=2)
    ones = torch.ones(1, 1, 5, 6, dtype=torch.float64)
    assert torch.allclose(evaluate(name, x, style, ones), evaluate(name, x, style), rtol=1e-9, atol=1e-14)


def test_mrf_mask_weights_the_patches_at_their_centres():
    x, s = features(seed=1, n=2, h=5, w=5), features(seed=2, n=2)
    statistic = make("mrf", s)
    mask = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    mask[..., 2, 2] = 1  # the centre of exactly one patch (the middle one of 3 x 3)
    gen, t = F.unfold(x, 3)[0].T, statistic.patches[mrf_matches(x, statistic.normalised)[0]]
    assert statistic(x, mask).item() == pytest.approx((gen[4] - t[4]).pow(2).mean().item(), rel=1e-10)


# ---------------------------------------------------------------------------------------------------------- batches


@pytest.mark.parametrize("name", NAMES)
def test_images_of_a_batch_are_independent(name):
    style = features(seed=1, h=6, w=5)
    batch = torch.cat([features(seed=10 + i) for i in range(3)])
    masks = torch.rand(3, 1, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for mask in (None, masks):
        together = evaluate(name, batch, style, mask)
        alone = torch.cat(
            [evaluate(name, batch[i : i + 1], style, None if mask is None else mask[i : i + 1]) for i in range(3)]
        )
        assert together.shape == (3,)
        assert torch.allclose(together, alone, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_float32_math_under_bf16(name):
    style = features(seed=1, n=8, h=8, w=8).float() * 50
    x = features(seed=2, n=8, h=8, w=8).float() * 50
    reference = evaluate(name, x, style)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = evaluate(name, x, style)
    from_bf16 = evaluate(name, x.bfloat16(), style)
    assert under_autocast.dtype == from_bf16.dtype == torch.float32
    assert torch.allclose(under_autocast, reference, rtol=1e-5)
    assert torch.allclose(from_bf16, evaluate(name, x.bfloat16().float(), style), rtol=1e-5)


# ---------------------------------------------------------------------------------------------- options and blends


def test_options_are_constructor_arguments_checked_there():
    style = features(seed=1)
    with pytest.raises(TypeError, match="kernal"):
        MMD(style, kernal="linear")
    with pytest.raises(NSTError, match="unknown MMD kernel 'cubic'"):
        MMD(style, kernel="cubic")
    with pytest.raises(TypeError, match="seed"):
        Gram(style, seed=1)
    assert MMD(style).calibration == 1e10 and MMD(style, kernel="polynomial").calibration == 1.0
    assert MRF(style, max_patches=8).calibration == MRF.calibration
    # per-step draws: the projections depend on (seed, step) only; mmd's positions only where the layer is larger
    sliced = SlicedWasserstein(features(n=6, seed=2), seed=0)
    sliced.begin_step(1, (1, 6, 4, 4), torch.device("cpu"))
    first = sliced.projections.clone()
    sliced.begin_step(1, (2, 6, 8, 8), torch.device("cpu"))
    assert first.shape == (6, 6) and torch.equal(first, sliced.projections)
    three = SlicedWasserstein(features(n=6, seed=2), n_projections=3)
    three.begin_step(1, (1, 6, 4, 4), torch.device("cpu"))
    assert three.projections.shape == (6, 3)
    mmd = MMD(features(n=6, seed=2))
    mmd.begin_step(1, (1, 6, 4, 4), torch.device("cpu"))
    assert mmd.positions is None
    mmd.begin_step(1, (1, 6, 40, 40), torch.device("cpu"))
    assert mmd.positions.shape == (1024,)
    for cls in CLASSES.values():
        assert cls(style).calibration > 0


@pytest.mark.parametrize("name", NAMES)
def test_several_styles_blend(name):
    styles = [features(seed=1), features(seed=2, h=6, w=5)]
    x = features(seed=3)
    each = [evaluate(name, x, s) for s in styles]
    k = x.shape[0]
    built = [make(name, s) for s in styles]
    objective = Objective(
        _Identity(),
        torch.zeros(1, 3, 5, 6, dtype=torch.float64),
        {},
        {"f": built},
        [0.25, 0.75],
        Weights([], ["f"], torch.zeros(k), torch.zeros(k, 0), torch.ones(k), torch.ones(k, 1)),
    ).double()
    objective.set_layer_shapes({"f": tuple(x.shape)})
    objective.begin_step(0, k)
    for statistic in objective.styles["f"]:
        _to_dtype(statistic, torch.float64)
    loss = objective.terms(objective.summarise({"f": x}), x)["style/f"]
    if name == "gram":  # one blended target: sum_i b_i |G - A_i|^2 = |G - A|^2 + a constant
        assert len(objective.styles["f"]) == 1
        targets = [gram_over_m(s)[0] for s in styles]
        constant = 0.25 * 0.75 * (targets[0] - targets[1]).pow(2).sum() / (4 * 16)
        assert loss.item() == pytest.approx((0.25 * each[0] + 0.75 * each[1] - constant).item(), rel=1e-9)
    else:
        assert loss.item() == pytest.approx((0.25 * each[0] + 0.75 * each[1]).item(), rel=1e-12)


class _Identity(torch.nn.Module):
    """A 'network' whose one layer is its input."""

    layer_names = ("f",)

    def forward(self, x, layers=None):
        return {"f": x}


def test_blend_statistics_blends_every_buffer():
    a, b = Gram(features(seed=1)), Gram(features(seed=2))
    expected = 0.3 * a.target + 0.7 * b.target
    assert torch.allclose(blend_statistics([a, b], [0.3, 0.7]).target, expected)


def test_mrf_on_layers_smaller_than_a_patch():
    tiny, x = features(seed=1, h=2, w=2), features(seed=2)
    statistic = make("mrf", tiny)
    assert statistic.patches.shape == (1, 4 * 4)  # one 2 x 2 patch
    assert statistic(x).item() > 0  # the generated 5 x 6 layer is matched with 2 x 2 patches
    assert make("mrf", x)(tiny).item() == 0  # a 2 x 2 layer holds no 3 x 3 patch
