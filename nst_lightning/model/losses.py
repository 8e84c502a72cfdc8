"""The paper's equations (Gatys et al., CVPR 2016, eqs. 1-7) as small pure functions.

Every function takes features of shape (B, N_l, H, W) and returns one value per image, shape (B,),
so a batch of independent images gives independent losses.

Large sums: Gram entries grow with M_l (and with the 0-255 input scale), their squared differences
with the square of that. We therefore compare G/M_l and fold the constants:
    E_l = 1/(4 N^2 M^2) sum (G - A)^2 = 1/(4 N^2) sum (G/M - A/M)^2,
which is the same number, kept in a range where float32 does not overflow, even at 1024 px (G itself, for
conv1_1 at 1024 px, stays below 1e13). All of this runs in float32, also under bf16 autocast.

Alternative style losses, each split into a target computed once from the style image and a loss
on the generated features, are collected in ``STYLE_LOSSES`` at the end of this module: see ``StyleStatistic``.
Random choices (subsamples, projections) come from generators seeded by (seed, step) on the features' device,
so the losses need no host synchronisation (except gaussian_w2's SVD on CUDA).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from nst_lightning.model.color import color_stats
from nst_lightning.util.errors import NSTError


def _at_least_fp32(x: Tensor) -> Tensor:
    """Half and bfloat16 go up to float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """L_content = 1/2 sum_ij (F_ij - P_ij)^2   (eq. 1)."""
    diff = _at_least_fp32(features) - _at_least_fp32(target)
    return 0.5 * diff.pow(2).sum((1, 2, 3))


def _positions_by_channels(features: Tensor) -> Tensor:
    """(B, N, H, W) -> (B, M, N), F transposed: a free view of the network's channels-last features."""
    return features.movedim(1, -1).flatten(1, 2)


def gram_matrix(features: Tensor) -> Tensor:
    """G_ij = sum_k F_ik F_jk   (eq. 3): the paper's Gram matrix, shape (B, N, N)."""
    f_t = _positions_by_channels(_at_least_fp32(features))
    return f_t.transpose(1, 2) @ f_t


class _GramOverM(torch.autograd.Function):
    """F F^T / M from F^T (B, M, N), with the gradient of a symmetric product written out: d(F F^T)/dF applied to
    dG is (dG + dG^T) F, one matrix product. Autograd would differentiate the two operands of F F^T separately
    (two products); benchmarks/step_parts.py measures the difference."""

    @staticmethod
    def forward(ctx: Any, f_t: Tensor) -> Tensor:
        ctx.save_for_backward(f_t)
        return (f_t.transpose(1, 2) @ f_t) / f_t.shape[1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (f_t,) = ctx.saved_tensors
        return f_t @ ((grad + grad.transpose(1, 2)) / f_t.shape[1])


def gram_over_m(features: Tensor, mask: Tensor | None = None) -> Tensor:
    """G / M_l, shape (B, N, N).

    With a ``mask`` (shape (B or 1, 1, H, W), values in [0, 1], at this layer's resolution) the positions
    are weighted by it and M_l becomes the mask's area: the Gram matrix of the masked region only.
    """
    f = _at_least_fp32(features)
    if mask is None:
        return _GramOverM.apply(_positions_by_channels(f))
    # sum_k m_k F_ik F_jk / sum_k m_k: for a binary mask, G over the white positions over their count
    area = mask.flatten(1).sum(1).clamp_min(1e-6)  # B
    f_t = _positions_by_channels(f * mask.sqrt()) / area.sqrt()[:, None, None]
    return f_t.transpose(1, 2) @ f_t


def style_layer_loss(features: Tensor, target_gram_over_m: Tensor, mask: Tensor | None = None) -> Tensor:
    """E_l = 1/(4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2   (eq. 4), from G/M and A/M.

    ``target_gram_over_m`` is A/M_l of the style image (shape (N, N) or (B, N, N)); ``mask``: see gram_over_m.
    """
    n = features.shape[1]
    diff = gram_over_m(features, mask) - _at_least_fp32(target_gram_over_m)
    return diff.pow(2).flatten(1).sum(1) / (4.0 * n * n)


def total_variation(image: Tensor) -> Tensor:
    """Sum of squared differences between neighbouring pixels (a smoothness prior), per image."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return _at_least_fp32(dx).pow(2).flatten(1).sum(1) + _at_least_fp32(dy).pow(2).flatten(1).sum(1)


def style_loss(layer_losses: dict[str, Tensor], weights: dict[str, float | Tensor]) -> Tensor:
    """L_style = sum_l w_l E_l   (eq. 5); w_l may be one number or one per image, shape (B,)."""
    return torch.stack([weights[name] * loss for name, loss in layer_losses.items()]).sum(0)


def color_loss(image: Tensor, target_mean: Tensor, target_cov: Tensor) -> Tensor:
    """L_color = 255^2 M/2 (|mu - mu_t|^2 + |C - C_t|_F^2): the RGB mean and covariance of the image (pixels
    in [0, 1]) against a reference's, summed over the M pixels at the network's 0-255 scale like the content
    loss, so that color_weight ~ 1 weighs about as much as the paper's total at the default ratio."""
    mean, cov = color_stats(image)
    mismatch = (mean - target_mean).pow(2).sum(1) + (cov - target_cov).pow(2).flatten(1).sum(1)
    return 0.5 * 255.0**2 * image[0, 0].numel() * mismatch


def temporal_loss(image: Tensor, target: Tensor) -> Tensor:
    """L_temporal = 1/2 sum (255 x - 255 t)^2: a content loss on the pixels (0-255, the network's input
    scale) that keeps a video frame close to the previous stylised frame."""
    return 0.5 * (255.0 * (_at_least_fp32(image) - _at_least_fp32(target))).pow(2).flatten(1).sum(1)


# ======================================================================================================================
# Alternative style losses
#
# Each is a pair of pure functions: ``*_target(style_features (1, N, h, w), **options) -> dict of tensors``, run
# once (under no_grad) per style image and layer, and ``*_loss(features (B, N, H, W), mask, **targets, **options)
# -> (B,)`` on the generated features. ``STYLE_LOSSES`` names them; ``StyleStatistic`` routes the options.
# ======================================================================================================================

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def _float32_region(fn: _Fn) -> _Fn:
    """Run ``fn(features, ...)`` with autocast off, so matrix products stay in float32 under bf16 autocast."""

    @functools.wraps(fn)
    def wrapper(features: Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=features.device.type, enabled=False):
            return fn(features, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _generator(seed: int, step: int, device: torch.device | str | None) -> torch.Generator:
    """A generator on ``device`` seeded from the pair (seed, step): (seed mod 2^32) * 2^32 + (step mod 2^32).

    Drawing on the device itself avoids a host-to-device copy (a synchronisation) per step; the same (seed, step)
    therefore gives different numbers on CPU and on CUDA, but always the same ones on a given kind of device.
    """
    generator = torch.Generator(device=torch.device(device if device is not None else "cpu"))
    generator.manual_seed(((int(seed) & 0xFFFFFFFF) << 32) | (int(step) & 0xFFFFFFFF))
    return generator


def draw_positions(
    n_positions: int, n_samples: int, seed: int, step: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """min(n_samples, n_positions) distinct position indices in [0, n_positions), sorted, drawn from (seed, step)."""
    order = torch.randperm(n_positions, generator=_generator(seed, step, device), device=device)
    return order[:n_samples].sort().values


def draw_projections(
    n_channels: int, n_proj: int, seed: int, step: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """(n_channels, n_proj) random unit directions (normalised Gaussian columns: uniform on the sphere), from a
    generator seeded by (seed, step). The sliced Wasserstein loss takes them as an argument; draw them once per
    optimiser step so that every closure evaluation of one L-BFGS step sees the same objective."""
    v = torch.randn(n_channels, n_proj, generator=_generator(seed, step, device), device=device)
    return v / v.norm(dim=0, keepdim=True).clamp_min(1e-12)


def _weights(mask: Tensor | None) -> Tensor | None:
    """A mask (B or 1, 1, H, W) -> per-position weights (B or 1, M), in the order of _positions_by_channels."""
    return None if mask is None else _at_least_fp32(mask).flatten(1)


def _normalised(weights: Tensor) -> Tensor:
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)


def channel_mean_std(features: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over the positions, (B, N) each; positions weighted by ``mask``.

    std = sqrt(var + eps): a dead (all-zero) ReLU channel then has a finite gradient instead of 0 * inf = nan.
    """
    x = _positions_by_channels(_at_least_fp32(features))  # B, M, N
    w = _weights(mask)
    if w is None:
        mean = x.mean(1)
        var = (x - mean[:, None]).pow(2).mean(1)
    else:
        w = _normalised(w)[..., None]
        mean = (w * x).sum(1)
        var = (w * (x - mean[:, None]).pow(2)).sum(1)
    return mean, (var + eps).sqrt()


def channel_mean_cov(features: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The Gaussian fit of the features: mean (B, N) and covariance (B, N, N) over the (weighted) positions."""
    x = _positions_by_channels(_at_least_fp32(features))  # B, M, N
    w = _weights(mask)
    if w is None:
        mean = x.mean(1)
        centred = x - mean[:, None]
        return mean, centred.transpose(1, 2) @ centred / x.shape[1]
    w = _normalised(w)[..., None]
    mean = (w * x).sum(1)
    centred = x - mean[:, None]
    return mean, centred.transpose(1, 2) @ (w * centred)


# ---- gram: the paper's E_l -------------------------------------------------------------------------------------------


@_float32_region
def gram_target(features: Tensor) -> dict[str, Tensor]:
    """{"gram": A/M_l} of the style image (the first in the batch), shape (N, N)."""
    return {"gram": gram_over_m(features[:1])[0]}


@_float32_region
def gram_loss(features: Tensor, mask: Tensor | None = None, *, gram: Tensor) -> Tensor:
    """E_l = 1/(4 N^2) |G/M - A/M|_F^2 (Gatys et al. 2016, eq. 4): ``style_layer_loss`` under the registry's API."""
    return style_layer_loss(features, gram, mask)


# ---- mean_std: batch-norm statistics (Li et al. 2017) ----------------------------------------------------------------


@_float32_region
def mean_std_target(features: Tensor) -> dict[str, Tensor]:
    """{"mean", "std"}: per-channel statistics of the style image, shape (N,) each."""
    mean, std = channel_mean_std(features[:1])
    return {"mean": mean[0], "std": std[0]}


@_float32_region
def mean_std_loss(features: Tensor, mask: Tensor | None = None, *, mean: Tensor, std: Tensor) -> Tensor:
    """L = 1/N sum_i ((mu_i - mu^s_i)^2 + (sigma_i - sigma^s_i)^2), i over the N channels.

    The batch-normalisation statistics loss of Li, Wang, Liu & Hou 2017, "Demystifying Neural Style Transfer"
    (IJCAI), eq. for L_style^l with BN statistics; matching the channels' means and deviations is also what
    adaptive instance normalisation does. The mask weights the positions (a weighted mean and deviation).
    """
    mu, sigma = channel_mean_std(features, mask)
    diff = (mu - mean.to(mu.dtype)).pow(2) + (sigma - std.to(mu.dtype)).pow(2)
    return diff.mean(-1)


# ---- mmd: maximum mean discrepancy (Li et al. 2017) ------------------------------------------------------------------

MMD_KERNELS = ("linear", "polynomial", "gaussian")


def _check_kernel(kernel: str) -> None:
    if kernel not in MMD_KERNELS:
        raise NSTError(f"unknown MMD kernel '{kernel}'; use one of: {', '.join(MMD_KERNELS)}")


def mmd_kernel(
    x: Tensor, y: Tensor, kernel: str, sigma2: Tensor | float = 1.0, degree: int = 2, offset: float = 0.0
) -> Tensor:
    """The kernel matrix k(x_i, y_j) between the rows of x (..., P, N) and y (..., Q, N), shape (..., P, Q).

    linear: x.y;  polynomial: (x.y + offset)^degree;  gaussian: exp(-|x - y|^2 / (2 sigma2)).
    """
    _check_kernel(kernel)
    dot = x @ y.transpose(-1, -2)
    if kernel == "linear":
        return dot
    if kernel == "polynomial":
        return (dot + offset) ** degree
    d2 = (x.pow(2).sum(-1)[..., :, None] + y.pow(2).sum(-1)[..., None, :] - 2.0 * dot).clamp_min(0)
    return torch.exp(-d2 / (2.0 * sigma2))


def mmd_normaliser(kernel: str, n_channels: int, degree: int = 2) -> int:
    """Z_k: linear N (the mean over channels of the squared mean difference), polynomial 4 N^degree (for degree 2 and
    offset 0, MMD^2 / Z_k is exactly the paper's E_l), gaussian 1 (k in [0, 1], so MMD^2 in [0, 2])."""
    _check_kernel(kernel)
    return {"linear": n_channels, "polynomial": 4 * n_channels**degree, "gaussian": 1}[kernel]


@_float32_region
def mmd_target(
    features: Tensor,
    *,
    max_positions: int = 1024,
    seed: int = 0,
    kernel: str = "gaussian",
    bandwidth: float = 1.0,
    degree: int = 2,
    offset: float = 0.0,
) -> dict[str, Tensor]:
    """{"style": (K, N) style positions, "mean_sq_distance": (), "style_term": ()}.

    K = min(M, max_positions): a larger layer is subsampled, by ``draw_positions(M, max_positions, seed, 0)``.
    mean_sq_distance: the mean of |s_i - s_j|^2 over pairs i != j of those positions (= 2 K/(K-1) tr Cov);
    the Gaussian kernel's sigma^2 is ``bandwidth`` times it (a data-driven bandwidth, as Li et al. 2017 set
    sigma^2 from the mean squared distance), so that one bandwidth fits every layer's scale.
    style_term: mean_ij k(s_i, s_j), the constant part of MMD^2, computed once with these kernel options.
    """
    _check_kernel(kernel)
    s = _positions_by_channels(_at_least_fp32(features[:1]))[0]
    if s.shape[0] > max_positions:
        s = s[draw_positions(s.shape[0], max_positions, seed, 0, s.device)]
    k = s.shape[0]
    d2 = (2.0 * (s - s.mean(0)).pow(2).sum(1).mean() * k / max(k - 1, 1)).clamp_min(1e-12)
    style_term = mmd_kernel(s, s, kernel, bandwidth * d2, degree, offset).mean()
    return {"style": s, "mean_sq_distance": d2, "style_term": style_term}


@_float32_region
def mmd_loss(
    features: Tensor,
    mask: Tensor | None = None,
    *,
    style: Tensor,
    mean_sq_distance: Tensor,
    style_term: Tensor,
    positions: Tensor | None = None,
    kernel: str = "gaussian",
    bandwidth: float = 1.0,
    degree: int = 2,
    offset: float = 0.0,
) -> Tensor:
    """MMD^2 / Z_k between the generated positions x_i (weights w_i) and the style's s_j (Li et al. 2017):

        MMD^2 = sum_ij w_i w_j k(x_i, x_j) - 2/K sum_ij w_i k(x_i, s_j) + 1/K^2 sum_ij k(s_i, s_j),

    the biased (V-statistic) estimate, >= 0 for these kernels and 0 when the two sets are equal; w_i = 1/M, or
    the mask's weights normalised to sum 1. Z_k: ``mmd_normaliser``. With the polynomial kernel (x.y)^2 (Li,
    Wang, Liu & Hou 2017, "Demystifying Neural Style Transfer"), sum_ij (x_i.x_j)^2 = |G|_F^2 and
    sum_ij (x_i.s_j)^2 = <G, A>_F, so MMD^2 = |G/M - A/K|_F^2 = 4 N^2 E_l: the Gram loss is this MMD. With the
    linear kernel MMD^2 = |mean x - mean s|^2.

    ``positions`` (long, (K_x,)): use only these generated positions (``draw_positions``, drawn once per step so
    that every position is visited over the steps; see StyleStatistic.step_inputs); None: all of them. Cost:
    O(K_x^2 + K_x K) kernel entries of N-dimensional dot products.
    """
    x = _positions_by_channels(_at_least_fp32(features))  # B, M, N
    w = _weights(mask)
    if positions is not None:
        x = x[:, positions]
        w = None if w is None else w[:, positions]
    w = torch.full((1, x.shape[1]), 1.0 / x.shape[1], dtype=x.dtype, device=x.device) if w is None else w.to(x.dtype)
    w = _normalised(w)
    sigma2 = bandwidth * mean_sq_distance.to(x.dtype)
    kxx = mmd_kernel(x, x, kernel, sigma2, degree, offset)  # B, M, M
    kxs = mmd_kernel(x, style.to(x.dtype), kernel, sigma2, degree, offset)  # B, M, K
    self_term = (w[:, None, :] @ kxx @ w[:, :, None])[:, 0, 0]
    cross = (w * kxs.mean(-1)).sum(-1)
    return (self_term - 2.0 * cross + style_term.to(x.dtype)) / mmd_normaliser(kernel, x.shape[-1], degree)


# ---- gaussian_w2: 2-Wasserstein distance between Gaussian fits -------------------------------------------------------


@_float32_region
def gaussian_w2_target(features: Tensor) -> dict[str, Tensor]:
    """{"mean": mu_s (N,), "cov_sqrt": S_s^1/2 (N, N), "trace": tr S_s ()}, computed once in float64: the square
    root by eigh, its eigenvalues clamped at 0 (S_s is positive semi-definite up to rounding)."""
    mean, cov = channel_mean_cov(features[:1].double())
    lam, vec = torch.linalg.eigh(cov[0])
    root = (vec * lam.clamp_min(0).sqrt()) @ vec.transpose(0, 1)
    dtype = _at_least_fp32(features).dtype
    return {"mean": mean[0].to(dtype), "cov_sqrt": root.to(dtype), "trace": cov[0].diagonal().sum().to(dtype)}


@_float32_region
def gaussian_w2_loss(
    features: Tensor, mask: Tensor | None = None, *, mean: Tensor, cov_sqrt: Tensor, trace: Tensor
) -> Tensor:
    """W2^2 / N between the Gaussian fits N(mu_x, S_x) of the generated and N(mu_s, S_s) of the style features:

        W2^2 = |mu_x - mu_s|^2 + tr(S_x + S_s - 2 (S_s^1/2 S_x S_s^1/2)^1/2)

    (the closed form of Dowson & Landau 1982 and Givens & Shortt 1984, "A class of Wasserstein metrics for
    probability distributions"; for style transfer e.g. Mroueh 2019, "Wasserstein Style Transfer"). Divided by N:
    a mean per channel. The mask weights the positions of the generated fit.

    The inner square root, without forming it: with X_c the centred generated features (M, N) and the weights
    w_i (1/M, or the mask's, summing to 1), S_x = X_c^T W X_c, so C = S_s^1/2 S_x S_s^1/2 = B^T B with
    B = W^1/2 X_c S_s^1/2, and tr(C^1/2) = sum of the singular values of B (its nuclear norm), from
    ``torch.linalg.svdvals``. Why this method:
    - precision: the singular values of B are accurate to ~eps sigma_max, while eigenvalues of C (= sigma^2) are
      accurate to ~eps sigma_max^2, so sqrt(eigenvalues of C) loses half the digits in the small ones. In float32,
      with VGG features (hundreds of dead or nearly dead channels), eigvalsh of C gave W2 = -6910 (instead of 0)
      for an image against itself at 64 px;
    - stability: d sigma_i / dB = u_i v_i^T has norm 1, so the gradient stays bounded at rank-deficient B (the
      sqrt of an eigenvalue has an infinite derivative at 0 and needs clamping), and only singular values are
      used: no 1/(sigma_i^2 - sigma_j^2) terms of singular-vector gradients, finite for repeated values;
    - it is exact, unlike a truncated Newton-Schulz iteration. Cost: an SVD of an (M, N) matrix, O(M N^2), the
      order of computing S_x itself (0.3 s at conv1_1 of a 256 px image on one CPU core). On CUDA, torch's
      SVD (like eigh) synchronises the device with the host (it checks convergence): the one loss here that does.
    """
    x = _positions_by_channels(_at_least_fp32(features))  # B, M, N
    w = _weights(mask)
    w = torch.full((1, x.shape[1]), 1.0 / x.shape[1], dtype=x.dtype, device=x.device) if w is None else w.to(x.dtype)
    w = _normalised(w)[..., None]  # B|1, M, 1
    mu = (w * x).sum(1)
    centred = x - mu[:, None]
    cross = torch.linalg.svdvals((w.sqrt() * centred) @ cov_sqrt.to(x.dtype)).sum(-1)
    spread = (w * centred.pow(2)).sum((1, 2))  # tr S_x
    means = (mu - mean.to(x.dtype)).pow(2).sum(-1)
    return (means + spread + trace.to(x.dtype) - 2.0 * cross) / x.shape[-1]


# ---- sliced_wasserstein (Heitz et al. 2021) --------------------------------------------------------------------------


@_float32_region
def sliced_wasserstein_target(features: Tensor, *, max_positions: int = 65536, seed: int = 0) -> dict[str, Tensor]:
    """{"style": (K, N)}: the style's feature vectors, K = min(M, max_positions) (``draw_positions(M, K, seed, 0)``
    when subsampled: the quantiles of 65536 samples are accurate to well below the features' own spread)."""
    s = _positions_by_channels(_at_least_fp32(features[:1]))[0]
    if s.shape[0] > max_positions:
        s = s[draw_positions(s.shape[0], max_positions, seed, 0, s.device)]
    return {"style": s}


def _quantile(sorted_values: Tensor, levels: Tensor) -> Tensor:
    """The empirical quantile function of ``sorted_values`` (K, P), sample j at level (j + 1/2)/K, linearly
    interpolated (constant beyond the first and last samples), at ``levels`` (M,) or (B, M, P)."""
    k = sorted_values.shape[0]
    u = (levels * k - 0.5).clamp(0, k - 1)
    i0 = u.floor().long()
    i1 = (i0 + 1).clamp_max(k - 1)
    frac = u - i0
    if levels.dim() == 1:
        frac = frac[:, None]
        return sorted_values[i0] * (1 - frac) + sorted_values[i1] * frac
    table = sorted_values.expand(levels.shape[0], -1, -1)
    return table.gather(1, i0) * (1 - frac) + table.gather(1, i1) * frac


SLICED_CHUNK = 8  # projections sorted at once without autograd: the sort's copies are a few feature maps' size


@_float32_region
def sliced_wasserstein_loss(
    features: Tensor, mask: Tensor | None = None, *, style: Tensor, projections: Tensor
) -> Tensor:
    """The sliced Wasserstein loss of Heitz, Vanhoey, Chambon & Belcour 2021 ("A Sliced Wasserstein Loss for
    Neural Texture Synthesis", CVPR): project the feature vectors on P unit directions v_p (``projections``,
    (N, P), see draw_projections), sort each projection, and compare the sorted values:

        L = 1/P sum_p 1/M sum_i (sort(X v_p)_i - q_p((i + 1/2)/M))^2,

    with q_p the style's quantile function along v_p: the squared 1-D 2-Wasserstein distance per direction.
    Sample counts: the style's sorted projections (K of them, sample j at level (j + 1/2)/K) are linearly
    interpolated at the generated sample's levels (i + 1/2)/M, so K need not equal M (with K = M they are the
    sorted values themselves). With a mask, the generated samples are weighted: in sorted order, sample i has
    level (W_<i + w_i/2)/W (W_<i the weights before it, W their sum) and its squared difference counts w_i/W.
    The sort permutation is piecewise constant: the gradient is that of the matched pairs.
    """
    p = projections.shape[1]
    if not torch.is_grad_enabled() and p > SLICED_CHUNK:  # measured only: the mean over P, a few at a time
        parts = projections.split(SLICED_CHUNK, 1)
        return sum(
            sliced_wasserstein_loss(features, mask, style=style, projections=part) * (part.shape[1] / p)
            for part in parts
        )
    f = _positions_by_channels(_at_least_fp32(features))
    v = projections.to(f.dtype)
    x = f @ v  # B, M, P
    xs, order = x.sort(1)
    ss = (style.to(f.dtype) @ v).sort(0).values  # K, P
    m = x.shape[1]
    w = _weights(mask)
    if w is None:
        levels = (torch.arange(m, device=x.device, dtype=x.dtype) + 0.5) / m
        return (xs - _quantile(ss, levels)).pow(2).mean((1, 2))
    ws = w[..., None].expand(x.shape[0], -1, x.shape[-1]).gather(1, order)  # B, M, P: weights in sorted order
    total = ws.sum(1).clamp_min(1e-12)  # B, P
    levels = (ws.cumsum(1) - 0.5 * ws) / total[:, None]
    return ((ws * (xs - _quantile(ss, levels)).pow(2)).sum(1) / total).mean(1)


# ---- mrf: nearest neural patches (Li & Wand 2016) --------------------------------------------------------------------


@_float32_region
def mrf_target(features: Tensor, *, max_patches: int = 1024, seed: int = 0, patch_size: int = 3) -> dict[str, Tensor]:
    """{"patches": (P, N k^2), "normalised": (P, N k^2)}: the style's k x k feature patches (stride 1, no padding,
    in F.unfold's channel-major order), at most ``max_patches`` of them (``draw_positions(L, max_patches, seed, 0)``),
    and the same patches divided by their norms for the normalised cross-correlation. A style layer smaller than
    k x k (conv5_1 of a 32 px image is 2 x 2) gives patches of its own size, min(k, h, w)."""
    k = min(patch_size, *features.shape[-2:])
    p = F.unfold(_at_least_fp32(features[:1]), k)[0].transpose(0, 1)  # L, N k^2
    if p.shape[0] > max_patches:
        p = p[draw_positions(p.shape[0], max_patches, seed, 0, p.device)]
    return {"patches": p, "normalised": p / p.norm(dim=1, keepdim=True).clamp_min(1e-12)}


MRF_CHUNK_BYTES = 2**28  # the cross-correlations of one chunk of style patches: bounded, whatever the size


@torch.no_grad()
@_float32_region
def mrf_matches(features: Tensor, normalised: Tensor, chunk: int | None = None) -> Tensor:
    """NN(i) = argmax_j psi_i . psi_j^s / (|psi_i| |psi_j^s|) for every k x k patch i of the generated features:
    a convolution with the normalised style patches (|psi_i| does not change the argmax), ``chunk`` style patches
    at a time (default: as many as keep one chunk's correlations within ``MRF_CHUNK_BYTES``), a running maximum.
    Returns (B, L) long, L = (H - k + 1)(W - k + 1) in row-major order."""
    f = _at_least_fp32(features.detach())
    n = f.shape[1]
    k = round((normalised.shape[1] / n) ** 0.5)
    kernels = normalised.reshape(-1, n, k, k).to(f.dtype)
    if chunk is None:
        correlations = f.shape[0] * (f.shape[2] - k + 1) * (f.shape[3] - k + 1) * f.element_size()
        chunk = max(1, min(256, MRF_CHUNK_BYTES // max(1, correlations)))
    best_value, best_index = None, None
    for start in range(0, kernels.shape[0], chunk):
        value, index = F.conv2d(f, kernels[start : start + chunk]).max(1)
        if best_value is None or best_index is None:
            best_value, best_index = value, index
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + start, best_index)
    assert best_index is not None, "no style patches"
    return best_index.flatten(1)


@_float32_region
def mrf_loss(
    features: Tensor,
    mask: Tensor | None = None,
    *,
    patches: Tensor,
    normalised: Tensor,
    matches: Tensor | None = None,
) -> Tensor:
    """E_s of Li & Wand 2016 ("Combining Markov Random Fields and Convolutional Neural Networks for Image
    Synthesis", CVPR, eq. 2): every k x k patch psi_i of the generated features is matched to the style patch
    with the highest normalised cross-correlation (``mrf_matches``, under no_grad, unless ``matches`` is given),
    and

        L = sum_i w_i |psi_i - psi^s_NN(i)|^2 / (N k^2 sum_i w_i),

    normalised by the number of patches (w_i = 1; with a mask, w_i = the mask at the patch's centre) and by the
    patch size N k^2: the mean squared difference per patch entry. The sum over patches is computed without
    unfolding the generated features: sum_i w_i |psi_i|^2 = sum_p c_p |f_p|^2 (c_p: the weights of the patches
    covering position p) and sum_i w_i psi_i . t_i = sum_p f_p . fold(w t)_p, so autograd keeps only (N, H, W)
    tensors. fold(w t) is summed one of the k^2 patch offsets at a time, and |t_i|^2 is gathered from the style
    patches' norms, so the matched patches (B, L, N k^2: 1.8 GB at conv1_1 of a 1024 x 768 image) never exist
    whole. The matches are piecewise constant: the gradient holds them fixed.
    """
    f = _at_least_fp32(features)
    n, h, w_ = f.shape[1:]
    d = patches.shape[1]
    k = round((d / n) ** 0.5)
    if h < k or w_ < k:  # no patch of the style's size fits: nothing to match (0, with a graph for backward)
        return f.flatten(1).sum(1) * 0.0
    if matches is None:
        matches = mrf_matches(f, normalised)
    lh, lw = h - k + 1, w_ - k + 1
    if mask is None:
        weights = torch.ones(1, lh * lw, dtype=f.dtype, device=f.device)
    else:
        c = k // 2
        weights = _at_least_fp32(mask)[..., c : c + lh, c : c + lw].flatten(1)
    style = patches.to(f.dtype)
    cover = F.fold(weights[:, None, :].expand(-1, k * k, -1), (h, w_), k)  # B|1, 1, H, W
    folded = torch.zeros(matches.shape[0], n, h, w_, dtype=f.dtype, device=f.device)  # fold(w t): B, N, H, W
    by_offset = style.view(-1, n, k, k)
    for dy in range(k):
        for dx in range(k):
            part = (weights[..., None] * by_offset[:, :, dy, dx][matches]).transpose(1, 2)  # B, N, L
            folded[:, :, dy : dy + lh, dx : dx + lw] += part.reshape(-1, n, lh, lw)
    own = (f.pow(2).sum(1, keepdim=True) * cover).flatten(1).sum(1)
    cross = (f * folded).flatten(1).sum(1)
    matched = (weights * style.pow(2).sum(1)[matches]).sum(1)
    return (own - 2.0 * cross + matched) / (weights.sum(1).clamp_min(1e-12) * d)


# ---- the registry ----------------------------------------------------------------------------------------------------


def _mmd_step_inputs(
    shape: Sequence[int], seed: int, step: int, device: torch.device | str | None, *, max_positions: int = 1024
) -> dict[str, Tensor]:
    m = int(shape[-2]) * int(shape[-1])
    return {} if m <= max_positions else {"positions": draw_positions(m, max_positions, seed, step, device)}


def _sliced_step_inputs(
    shape: Sequence[int], seed: int, step: int, device: torch.device | str | None, *, n_projections: int | None = None
) -> dict[str, Tensor]:
    n = int(shape[1])
    return {"projections": draw_projections(n, n_projections or n, seed, step, device)}


@dataclass(frozen=True)
class StyleStatistic:
    """One style loss: ``target`` once per style image and layer, ``loss`` on the generated features.

    - ``target(style_features (1, N, h, w), **target options) -> dict[str, Tensor]`` (call it under no_grad);
    - ``loss(features (B, N, H, W), mask (B|1, 1, H, W) or None, **targets, **step inputs, **loss options) -> (B,)``;
    - ``step_inputs(features.shape, seed, step, device, **step options) -> dict[str, Tensor]``: tensors drawn
      once per optimiser step (sliced_wasserstein's projections, mmd's generated positions), or None;
    - ``calibration``: a constant factor so that ``ratio`` keeps its meaning for every loss: the objective is
      alpha L_content + beta calibration sum_l w_l loss_l with alpha = ratio * beta, exactly as for gram
      (calibration 1). Rule: calibration = sum_l E_l / sum_l loss_l for a white-noise image against the style,
      at the default layers conv1_1..conv5_1 with equal weights, the original VGG19 with average pooling,
      grace_hopper-sized noise x brushstrokes at 64-256 px, rounded (it varies about 2x with the style image and
      the size, since E_l grows with the 4th power of the feature scale and these losses with the 2nd);
      ``calibrations`` overrides it per value of one option (mmd's kernel: the polynomial kernel's loss is E_l
      itself, calibration 1);
    - ``blend_targets``: several styles with blend weights b_i are one blended target sum_i b_i T_i (gram: the
      loss is quadratic in the target, so this is the blend of the losses up to a constant) rather than
      sum_i b_i loss(T_i): see ``blended_targets``.

    The methods take one options mapping (e.g. from the config) and pass each option to the functions that
    accept it: ``check_options``, ``make_target``, ``make_step_inputs``, ``layer_loss``, ``calibration_for``.
    """

    name: str
    target: Callable[..., dict[str, Tensor]]
    loss: Callable[..., Tensor]
    calibration: float = 1.0
    blend_targets: bool = False
    target_options: tuple[str, ...] = ()
    loss_options: tuple[str, ...] = ()
    step_inputs: Callable[..., dict[str, Tensor]] | None = None
    step_options: tuple[str, ...] = ()
    calibrations: Mapping[str, Mapping[Any, float]] = field(default_factory=dict)
    mask: str = "positions weighted by the mask"

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.target_options + self.loss_options + self.step_options))

    def check_options(self, options: Mapping[str, Any] | None) -> None:
        """Raise an NSTError naming any option this loss does not take (and the ones it does)."""
        unknown = [key for key in options or {} if key not in self.options]
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise NSTError(f"style_loss={self.name} has no option {', '.join(unknown)}; its options: {valid}")
        if "kernel" in (options or {}):
            _check_kernel(str(options["kernel"]))  # type: ignore[index]

    def _pick(self, options: Mapping[str, Any] | None, names: tuple[str, ...]) -> dict[str, Any]:
        self.check_options(options)
        return {key: value for key, value in (options or {}).items() if key in names}

    def make_target(self, features: Tensor, options: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        """The target tensors of one style image's features at one layer (no gradient)."""
        with torch.no_grad():
            return self.target(features, **self._pick(options, self.target_options))

    def make_step_inputs(
        self,
        shape: Sequence[int],
        seed: int,
        step: int,
        device: torch.device | str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """What this optimiser step draws for a layer of generated features of ``shape`` (empty if nothing)."""
        if self.step_inputs is None:
            return {}
        return self.step_inputs(shape, seed, step, device, **self._pick(options, self.step_options))

    def layer_loss(
        self,
        features: Tensor,
        mask: Tensor | None,
        targets: Mapping[str, Tensor],
        step_inputs: Mapping[str, Tensor] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """loss(features, mask, **targets, **step_inputs, **loss options), shape (B,)."""
        return self.loss(features, mask, **targets, **(step_inputs or {}), **self._pick(options, self.loss_options))

    def calibration_for(self, options: Mapping[str, Any] | None = None) -> float:
        """The calibration constant for these options (mmd: per kernel)."""
        for option, table in self.calibrations.items():
            default = _default_option(self, option)
            value = (options or {}).get(option, default)
            if value in table:
                return table[value]
        return self.calibration


def _default_option(statistic: StyleStatistic, option: str) -> Any:
    import inspect

    for fn in (statistic.loss, statistic.target):
        parameter = inspect.signature(fn).parameters.get(option)
        if parameter is not None:
            return parameter.default
    return None


def blended_targets(
    statistic: StyleStatistic, targets: Sequence[Mapping[str, Tensor]], blend: Sequence[float]
) -> list[tuple[float, dict[str, Tensor]]]:
    """[(weight, targets)] to sum over for several style images with blend weights b_i (summing to 1):
    [(1, sum_i b_i T_i)] when ``statistic.blend_targets`` (gram), else [(b_i, T_i)] for each style."""
    if len(targets) != len(blend):
        raise ValueError(f"{len(targets)} targets but {len(blend)} blend weights")
    if statistic.blend_targets:
        return [(1.0, {key: sum(b * t[key] for b, t in zip(blend, targets, strict=True)) for key in targets[0]})]
    return [(float(b), dict(t)) for b, t in zip(blend, targets, strict=True)]


def blended_layer_loss(
    statistic: StyleStatistic,
    features: Tensor,
    mask: Tensor | None,
    weighted_targets: Sequence[tuple[float, Mapping[str, Tensor]]],
    step_inputs: Mapping[str, Tensor] | None = None,
    options: Mapping[str, Any] | None = None,
) -> Tensor:
    """sum_i b_i loss(features, T_i) over ``blended_targets``'s list, shape (B,) (not yet calibrated)."""
    losses = [b * statistic.layer_loss(features, mask, t, step_inputs, options) for b, t in weighted_targets if b]
    return torch.stack(losses).sum(0)


STYLE_LOSSES: dict[str, StyleStatistic] = {
    "gram": StyleStatistic("gram", gram_target, gram_loss, 1.0, blend_targets=True),
    "mean_std": StyleStatistic("mean_std", mean_std_target, mean_std_loss, 2.5e4),
    "mmd": StyleStatistic(
        "mmd",
        mmd_target,
        mmd_loss,
        1e10,
        target_options=("max_positions", "seed", "kernel", "bandwidth", "degree", "offset"),
        loss_options=("kernel", "bandwidth", "degree", "offset"),
        step_inputs=_mmd_step_inputs,
        step_options=("max_positions",),
        calibrations={"kernel": {"linear": 5e4, "polynomial": 1.0, "gaussian": 1e10}},
        mask="weighted positions (of the subsample in use)",
    ),
    "gaussian_w2": StyleStatistic("gaussian_w2", gaussian_w2_target, gaussian_w2_loss, 2e4),
    "sliced_wasserstein": StyleStatistic(
        "sliced_wasserstein",
        sliced_wasserstein_target,
        sliced_wasserstein_loss,
        3e4,
        target_options=("max_positions", "seed"),
        step_inputs=_sliced_step_inputs,
        step_options=("n_projections",),
        mask="weighted empirical quantiles (each generated sample counts its weight)",
    ),
    "mrf": StyleStatistic(
        "mrf",
        mrf_target,
        mrf_loss,
        1.5e4,
        target_options=("max_patches", "seed", "patch_size"),
        mask="patches weighted by the mask at their centre",
    ),
}
STYLE_LOSS_NAMES = tuple(STYLE_LOSSES)
