"""Style statistics: what is compared at a style layer, each an ``nn.Module`` holding its style targets as buffers.

A statistic reduces a layer's features to a **summary**, sums over positions (Gram: sum_j w_j f_j f_j^T and the
mass sum_j w_j; mean and deviation: first and second moments), and its loss is a function of that summary alone:

    E_l = loss(summarise(F_l)).

That split is what exact tiles need (model/tiles.py): the summaries of an image's tiles add up to the image's, so
the loss of a tiled image is the untiled one. A few statistics keep per-position values instead of sums, listed
in ``gathered`` and concatenated over tiles along the positions: sliced Wasserstein keeps its projections (the
global sort needs every one), MMD the features at the positions it samples. A *local* statistic (MRF's patches)
sums a loss over positions: its summary is that sum, and ``context`` says how many positions beyond a tile's own
it reads.

Writing your own: subclass ``StyleStatistic``; the constructor takes one style image's features (1, N, h, w) and
the statistic's options as keyword arguments with defaults, and registers its targets as buffers; implement
``summarise`` and ``loss``. A YAML node ``_target_: your_module.YourStatistic`` with ``_partial_: true`` and its
options makes it ``style_loss=your_statistic`` (docs: "Writing your own style loss").

Random choices (subsamples, projections) come from generators seeded by (seed, step) on the features' device, so
no statistic synchronises with the host (but gaussian_w2's eigendecomposition on CUDA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nst_lightning.model.losses import at_least_fp32, gram_over_m, positions_by_channels, symmetric_product
from nst_lightning.util.errors import NSTError

Summary = dict[str, Tensor]
Region = tuple[int, int, int, int]  # (top, left, height, width) of the layer's whole grid the features start at


def full_region(features: Tensor) -> Region:
    return 0, 0, features.shape[-2], features.shape[-1]


def exact(like: Tensor) -> torch.autocast:
    """A region without autocast: the statistics' sums and products stay in float32 (or float64) under bf16."""
    return torch.autocast(like.device.type, enabled=False)


class StyleStatistic(nn.Module):
    """One style image's statistic at one layer.

    Subclasses set the class attributes that apply and implement ``summarise`` and ``loss``:

    - ``blend_targets``: several style images are one blended target sum_i b_i T_i (a loss quadratic in the target
      is then the blend of the losses up to a constant), rather than sum_i b_i loss(T_i);
    - ``gathered``: summary keys holding per-position values (dimension 1), concatenated over tiles, not summed;
    - ``context``: positions beyond a tile's own, right and below, the summary reads (a k x k patch: k - 1);
    - ``tileable``: False for a loss that no summary over positions expresses: it is refused with tiles;
    - ``draws_per_step``: it draws new samples every step (``begin_step``): no CUDA graph then;
    - ``bytes_per_element``: what it keeps for the backward pass and needs in temporaries beyond Gram's float32
      copy and N x N matrices, per element of the layer's features (the memory plan; measured at 1024 px);
    - ``calibration``: beta is multiplied by it, so that ``ratio`` keeps the meaning it has for Gram (1): the ratio
      of sum_l E_l to this statistic's sum_l loss_l for a white-noise image against the style, with the default
      layers and equal weights, the original VGG19 with average pooling, grace_hopper-sized noise x brushstrokes at
      64-256 px, rounded (it varies about 2x with the image and the size).
    """

    blend_targets: ClassVar[bool] = False
    gathered: ClassVar[frozenset[str]] = frozenset()
    context: ClassVar[int] = 0
    tileable: ClassVar[bool] = True
    draws_per_step: ClassVar[bool] = False
    calibration: float = 1.0
    bytes_per_element: ClassVar[int] = 0  # memory beyond Gram's, per element of the layer's features (memory plan)

    def begin_step(self, step: int, shape: Sequence[int], device: torch.device) -> None:
        """Draw this step's samples for the generated layer of ``shape`` (B, N, H, W): fixed within the step, so
        the objective L-BFGS sees is one function; reproducible from the seed and the step."""

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        """The summary of the generated ``features`` (B, N, h, w); ``mask`` (B|1, 1, h, w) weights the positions;
        ``region`` says where in the layer's grid the features lie (default: the whole layer)."""
        raise NotImplementedError

    def loss(self, summary: Summary) -> Tensor:
        """The loss (B,) of a summary of the whole layer."""
        raise NotImplementedError

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        with exact(features):
            return self.loss(self.summarise(features, mask))


def _mass(features: Tensor, mask: Tensor | None) -> Tensor:
    """sum_j w_j: the positions' count, or the mask's area, (B|1,)."""
    if mask is None:
        return torch.full((1,), float(features.shape[-2] * features.shape[-1]), device=features.device)
    return at_least_fp32(mask).flatten(1).sum(1)


def _weighted(x: Tensor, mask: Tensor | None) -> Tensor:
    """x (B, M, C) with each position multiplied by its weight (the mask, flattened like x)."""
    return x if mask is None else x * at_least_fp32(mask).flatten(1)[..., None].to(x.dtype)


def second_moment(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """sum_j w_j x_j x_j^T over the positions of x (B, M, N): (B, N, N)."""
    if mask is None:
        return symmetric_product(x)
    return symmetric_product(x * at_least_fp32(mask).flatten(1).sqrt()[..., None].to(x.dtype))


# ---- gram: the paper's E_l ------------------------------------------------------------------------------------------


class Gram(StyleStatistic):
    """E_l = 1/(4 N^2 M^2) sum_ij (G_ij - A_ij)^2, Gatys et al. 2016, eq. 4, compared as G/M against A/M (the same
    number, in a range where float32 cannot overflow). Summary: G = sum_j w_j f_j f_j^T and the mass M = sum_j w_j
    (a mask weights the positions; M is then its area)."""

    blend_targets = True

    def __init__(self, style: Tensor) -> None:
        super().__init__()
        with torch.no_grad(), exact(style):
            self.register_buffer("target", gram_over_m(style[:1])[0])  # A / M_style

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        x = positions_by_channels(at_least_fp32(features))
        return {"gram": second_moment(x, mask), "mass": _mass(features, mask)}

    def loss(self, summary: Summary) -> Tensor:
        n = summary["gram"].shape[-1]
        diff = summary["gram"] / summary["mass"][:, None, None] - self.target.to(summary["gram"].dtype)
        return diff.pow(2).flatten(1).sum(1) / (4.0 * n * n)


# ---- mean_std: batch-norm statistics (Li et al. 2017) ---------------------------------------------------------------


class MeanStd(StyleStatistic):
    """L = 1/N sum_i ((mu_i - mu^s_i)^2 + (sigma_i - sigma^s_i)^2) over the N channels: the batch-normalisation
    statistics loss of Li, Wang, Liu & Hou 2017, "Demystifying Neural Style Transfer" (IJCAI); matching the
    channels' means and deviations is also what adaptive instance normalisation does. sigma = sqrt(var + eps): a
    dead channel has a finite gradient. The moments are summed about the style's means (less cancellation)."""

    calibration = 2.5e4

    bytes_per_element = 10

    def __init__(self, style: Tensor, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        with torch.no_grad(), exact(style):
            s = positions_by_channels(at_least_fp32(style[:1]))[0]
            mean = s.mean(0)
            self.register_buffer("mean", mean)
            self.register_buffer("std", ((s - mean).pow(2).mean(0) + eps).sqrt())

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        x = positions_by_channels(at_least_fp32(features)) - self.mean.to(features.device)
        weighted = _weighted(x, mask)
        return {"first": weighted.sum(1), "second": (weighted * x).sum(1), "mass": _mass(features, mask)}

    def loss(self, summary: Summary) -> Tensor:
        mass = summary["mass"][:, None]
        shift = summary["first"] / mass  # mu - mu^s
        var = (summary["second"] / mass - shift.pow(2)).clamp_min(0)
        sigma = (var + self.eps).sqrt()
        return (shift.pow(2) + (sigma - self.std.to(sigma.dtype)).pow(2)).mean(-1)


# ---- gaussian_w2: 2-Wasserstein distance between Gaussian fits ------------------------------------------------------


class _TraceSqrt(torch.autograd.Function):
    """tr(C^1/2) of symmetric positive semi-definite matrices C (B, N, N), in float64, with the gradient
    1/2 C^+1/2 (the pseudo-inverse root: eigenvalues at rounding level count as zero, where C^-1/2 would be
    infinite; through C = S^1/2 S_x S^1/2 this is the bounded gradient of the nuclear norm of X_c S^1/2)."""

    @staticmethod
    def forward(ctx: Any, c: Tensor) -> Tensor:
        values, vectors = torch.linalg.eigh(c.double())
        floor = values.amax(-1, keepdim=True).clamp_min(0) * (c.shape[-1] * torch.finfo(torch.float64).eps * 1e3)
        root = values.clamp_min(0).sqrt()
        ctx.save_for_backward(vectors, torch.where(values > floor, 0.5 / root.clamp_min(1e-300), 0.0))
        ctx.dtype = c.dtype
        return root.sum(-1).to(c.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        vectors, half_inverse = ctx.saved_tensors
        g = (vectors * half_inverse[:, None, :]) @ vectors.transpose(1, 2)
        return (grad.double()[:, None, None] * g).to(ctx.dtype)


class GaussianW2(StyleStatistic):
    """W2^2 / N between the Gaussian fits N(mu_x, S_x) of the generated and N(mu_s, S_s) of the style features:

        W2^2 = |mu_x - mu_s|^2 + tr(S_x + S_s - 2 (S_s^1/2 S_x S_s^1/2)^1/2)

    (Dowson & Landau 1982; Givens & Shortt 1984; for style transfer e.g. Mroueh 2019, "Wasserstein Style
    Transfer"). Divided by N: a mean per channel. The summary is the moments about the style's mean, accumulated in
    float64: the square root of C = S_s^1/2 S_x S_s^1/2 amplifies rounding in its small eigenvalues (hundreds of
    VGG channels are nearly dead), which float64 moments keep far below the features' spread. Its
    eigendecomposition (``_TraceSqrt``) is the one step that synchronises a CUDA device with the host."""

    calibration = 2e4

    bytes_per_element = 14

    def __init__(self, style: Tensor) -> None:
        super().__init__()
        with torch.no_grad(), exact(style):
            s = positions_by_channels(style[:1].double())[0]
            mean = s.mean(0)
            centred = s - mean
            cov = centred.T @ centred / s.shape[0]
            lam, vec = torch.linalg.eigh(cov)
            root = (vec * lam.clamp_min(0).sqrt()) @ vec.T
            dtype = at_least_fp32(style).dtype
            self.register_buffer("mean", mean.to(dtype))
            self.register_buffer("cov_sqrt", root.to(dtype))
            self.register_buffer("trace", cov.diagonal().sum().to(dtype))

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        x = (positions_by_channels(at_least_fp32(features)) - self.mean.to(features.device)).double()
        return {"first": _weighted(x, mask).sum(1), "second": second_moment(x, mask), "mass": _mass(features, mask)}

    def loss(self, summary: Summary) -> Tensor:
        mass = summary["mass"].double()
        shift = summary["first"] / mass[:, None]  # mu_x - mu_s
        cov = summary["second"] / mass[:, None, None] - shift[:, :, None] * shift[:, None, :]
        root = self.cov_sqrt.double()
        cross = _TraceSqrt.apply(root @ cov @ root)
        n = cov.shape[-1]
        w2 = shift.pow(2).sum(-1) + cov.diagonal(dim1=1, dim2=2).sum(-1) + self.trace.double() - 2.0 * cross
        return (w2 / n).to(at_least_fp32(self.mean).dtype)


# ---- sampling -------------------------------------------------------------------------------------------------------


def generator(seed: int, step: int, device: torch.device | str | None) -> torch.Generator:
    """A generator on ``device`` seeded from the pair (seed, step): (seed mod 2^32) * 2^32 + (step mod 2^32).

    Drawing on the device itself avoids a host-to-device copy (a synchronisation) per step; the same (seed, step)
    therefore gives different numbers on CPU and on CUDA, but always the same ones on a given kind of device.
    """
    gen = torch.Generator(device=torch.device(device if device is not None else "cpu"))
    gen.manual_seed(((int(seed) & 0xFFFFFFFF) << 32) | (int(step) & 0xFFFFFFFF))
    return gen


def draw_positions(
    n_positions: int, n_samples: int, seed: int, step: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """min(n_samples, n_positions) distinct position indices in [0, n_positions), sorted, drawn from (seed, step)."""
    order = torch.randperm(n_positions, generator=generator(seed, step, device), device=device)
    return order[:n_samples].sort().values


def draw_projections(
    n_channels: int, n_proj: int, seed: int, step: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """(n_channels, n_proj) random unit directions (normalised Gaussian columns: uniform on the sphere), seeded by
    (seed, step): drawn once per optimiser step, so every evaluation within a step sees one objective."""
    v = torch.randn(n_channels, n_proj, generator=generator(seed, step, device), device=device)
    return v / v.norm(dim=0, keepdim=True).clamp_min(1e-12)


def _subsample(rows: Tensor, limit: int, seed: int) -> Tensor:
    """At most ``limit`` of the rows, a seeded subsample (``draw_positions(len, limit, seed, 0)``)."""
    if rows.shape[0] <= limit:
        return rows
    return rows[draw_positions(rows.shape[0], limit, seed, 0, rows.device)]


def _local_positions(positions: Tensor, region: Region, width: int, shape: tuple[int, int]) -> Tensor:
    """The indices, within features of ``shape`` (h, w) at ``region`` of a layer ``width`` wide, of the layer's
    flat ``positions`` that fall inside."""
    top, left = region[0], region[1]
    rows, cols = positions // width - top, positions % width - left
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return (rows * shape[1] + cols)[inside]


# ---- mmd: maximum mean discrepancy (Li et al. 2017) -----------------------------------------------------------------

MMD_KERNELS = ("linear", "polynomial", "gaussian")


def mmd_kernel(
    x: Tensor, y: Tensor, kernel: str, sigma2: Tensor | float = 1.0, degree: int = 2, offset: float = 0.0
) -> Tensor:
    """The kernel matrix k(x_i, y_j) between the rows of x (..., P, N) and y (..., Q, N), shape (..., P, Q).

    linear: x.y;  polynomial: (x.y + offset)^degree;  gaussian: exp(-|x - y|^2 / (2 sigma2)).
    """
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
    return {"linear": n_channels, "polynomial": 4 * n_channels**degree, "gaussian": 1}[kernel]


class MMD(StyleStatistic):
    """MMD^2 / Z_k between the generated positions x_i (weights w_i) and the style's s_j (Li et al. 2017):

        MMD^2 = sum_ij w_i w_j k(x_i, x_j) - 2/K sum_ij w_i k(x_i, s_j) + 1/K^2 sum_ij k(s_i, s_j),

    the biased (V-statistic) estimate; w_i = 1/M, or the mask's weights normalised to sum 1. With the polynomial
    kernel (x.y)^2, MMD^2 = |G/M - A/K|_F^2 = 4 N^2 E_l: the Gram loss is this MMD; with the linear kernel,
    |mean x - mean s|^2. Positions: at most ``max_positions`` of the style's (a seeded subsample, once) and of the
    generated image's (drawn anew every step from (seed, step), so every position is visited over the steps). The
    Gaussian kernel's sigma^2 is ``bandwidth`` times the style's mean squared distance between positions (a
    data-driven bandwidth, as Li et al. set it), so one bandwidth fits every layer. The summary is the sampled
    positions' features (gathered over tiles: the loss compares them pairwise)."""

    gathered = frozenset({"samples", "weights"})
    draws_per_step = True

    bytes_per_element = 4

    def __init__(
        self,
        style: Tensor,
        *,
        kernel: str = "gaussian",
        bandwidth: float = 1.0,
        degree: int = 2,
        offset: float = 0.0,
        max_positions: int = 1024,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if kernel not in MMD_KERNELS:
            raise NSTError(f"unknown MMD kernel '{kernel}'; use one of: {', '.join(MMD_KERNELS)}")
        self.kernel, self.bandwidth, self.degree, self.offset = kernel, bandwidth, degree, offset
        self.max_positions, self.seed = max_positions, seed
        self.calibration = {"linear": 5e4, "polynomial": 1.0, "gaussian": 1e10}[kernel]
        with torch.no_grad(), exact(style):
            s = _subsample(positions_by_channels(at_least_fp32(style[:1]))[0], max_positions, seed)
            k = s.shape[0]
            d2 = (2.0 * (s - s.mean(0)).pow(2).sum(1).mean() * k / max(k - 1, 1)).clamp_min(1e-12)
            self.register_buffer("style", s)
            self.register_buffer("sigma2", bandwidth * d2)
            self.register_buffer("style_term", mmd_kernel(s, s, kernel, bandwidth * d2, degree, offset).mean())
        self.positions: Tensor | None = None
        self.width = 0

    def begin_step(self, step: int, shape: Sequence[int], device: torch.device) -> None:
        m, self.width = int(shape[-2]) * int(shape[-1]), int(shape[-1])
        self.positions = (
            None if m <= self.max_positions else draw_positions(m, self.max_positions, self.seed, step, device)
        )

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        x = positions_by_channels(at_least_fp32(features))
        w = _mass_weights(features, mask)
        if self.positions is not None:
            region = region or full_region(features)
            local = _local_positions(self.positions.to(x.device), region, self.width, features.shape[-2:])
            x, w = x[:, local], w[:, local]
        return {"samples": x, "weights": w}

    def loss(self, summary: Summary) -> Tensor:
        x = summary["samples"]
        w = summary["weights"].to(x.dtype)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        sigma2 = self.sigma2.to(x.dtype)
        kxx = mmd_kernel(x, x, self.kernel, sigma2, self.degree, self.offset)
        kxs = mmd_kernel(x, self.style.to(x.dtype), self.kernel, sigma2, self.degree, self.offset)
        self_term = (w[:, None, :] @ kxx @ w[:, :, None])[:, 0, 0]
        cross = (w * kxs.mean(-1)).sum(-1)
        total = self_term - 2.0 * cross + self.style_term.to(x.dtype)
        return total / mmd_normaliser(self.kernel, x.shape[-1], self.degree)


def _mass_weights(features: Tensor, mask: Tensor | None) -> Tensor:
    """Each position's weight, flattened like the features' positions: (B|1, M)."""
    if mask is None:
        return torch.ones(1, features.shape[-2] * features.shape[-1], device=features.device)
    return at_least_fp32(mask).flatten(1)


# ---- sliced_wasserstein (Heitz et al. 2021) -------------------------------------------------------------------------


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


def sliced_distance(projected: Tensor, weights: Tensor | None, style_sorted: Tensor) -> Tensor:
    """1/P sum_p of the squared 1-D 2-Wasserstein distance between the generated samples ``projected`` (B, M, P)
    (``weights`` (B|1, M) or None: equal) and the style's quantiles along each direction (``style_sorted`` (K, P),
    each column sorted). In sorted order, weighted sample i has level (W_<i + w_i/2)/W and counts w_i/W; equal
    weights give levels (i + 1/2)/M. The style's K samples are interpolated at those levels, so K need not be M.
    The sort permutation is piecewise constant: the gradient is that of the matched pairs."""
    p = projected.shape[-1]
    if not torch.is_grad_enabled() and p > SLICED_CHUNK:  # measured only: the mean over P, a few at a time
        parts = zip(projected.split(SLICED_CHUNK, -1), style_sorted.split(SLICED_CHUNK, -1), strict=True)
        return sum(sliced_distance(x, weights, s) * (x.shape[-1] / p) for x, s in parts)  # type: ignore[return-value]
    xs, order = projected.sort(1)
    m = projected.shape[1]
    if weights is None:
        levels = (torch.arange(m, device=xs.device, dtype=xs.dtype) + 0.5) / m
        return (xs - _quantile(style_sorted, levels)).pow(2).mean((1, 2))
    ws = weights.to(xs.dtype)[..., None].expand(xs.shape[0], -1, p).gather(1, order)  # weights in sorted order
    total = ws.sum(1).clamp_min(1e-12)
    levels = (ws.cumsum(1) - 0.5 * ws) / total[:, None]
    return ((ws * (xs - _quantile(style_sorted, levels)).pow(2)).sum(1) / total).mean(1)


class SlicedWasserstein(StyleStatistic):
    """The sliced Wasserstein loss of Heitz, Vanhoey, Chambon & Belcour 2021 ("A Sliced Wasserstein Loss for Neural
    Texture Synthesis", CVPR): project the feature vectors on P unit directions v_p (drawn from (seed, step) once per
    step; ``n_projections``, None: as many as channels), sort each projection, and compare with the style's:

        L = 1/P sum_p 1/M sum_i (sort(X v_p)_i - q_p((i + 1/2)/M))^2,

    q_p the style's quantile function along v_p (``sliced_distance``). The style keeps at most ``max_positions``
    samples (a seeded subsample: the quantiles of 65536 samples are accurate far below the features' spread). The
    summary is the projections (gathered over tiles: the sort is global)."""

    gathered = frozenset({"projected", "weights"})
    draws_per_step = True
    calibration = 3e4

    bytes_per_element = 16

    def __init__(
        self, style: Tensor, *, n_projections: int | None = None, max_positions: int = 65536, seed: int = 0
    ) -> None:
        super().__init__()
        self.n_projections, self.seed = n_projections, seed
        with torch.no_grad(), exact(style):
            self.register_buffer(
                "style", _subsample(positions_by_channels(at_least_fp32(style[:1]))[0], max_positions, seed)
            )
        projections = draw_projections(style.shape[1], n_projections or style.shape[1], seed).to(self.style.dtype)
        self.register_buffer("projections", projections)
        with exact(style):
            self.register_buffer("style_sorted", (self.style @ projections).sort(0).values)

    def begin_step(self, step: int, shape: Sequence[int], device: torch.device) -> None:
        n = int(shape[1])
        projections = draw_projections(n, self.n_projections or n, self.seed, step, device).to(self.style.dtype)
        self.projections = projections
        with exact(projections):
            self.style_sorted = (self.style.to(device) @ projections).sort(0).values

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        f = positions_by_channels(at_least_fp32(features))
        x = f @ self.projections.to(device=f.device, dtype=f.dtype)
        summary = {"projected": x}
        if mask is not None:
            summary["weights"] = at_least_fp32(mask).flatten(1)
        return summary

    def loss(self, summary: Summary) -> Tensor:
        projected = summary["projected"]
        return sliced_distance(projected, summary.get("weights"), self.style_sorted.to(projected.dtype))


# ---- mrf: nearest neural patches (Li & Wand 2016) -------------------------------------------------------------------

MRF_CHUNK_BYTES = 2**28  # the cross-correlations of one chunk of style patches: bounded, whatever the size


@torch.no_grad()
def mrf_matches(features: Tensor, normalised: Tensor, chunk: int | None = None) -> Tensor:
    """NN(i) = argmax_j psi_i . psi_j^s / (|psi_i| |psi_j^s|) for every k x k patch i of the generated features:
    a convolution with the normalised style patches (|psi_i| does not change the argmax), ``chunk`` style patches
    at a time (default: as many as keep one chunk's correlations within ``MRF_CHUNK_BYTES``), a running maximum.
    Returns (B, L) long, L = (H - k + 1)(W - k + 1) in row-major order."""
    f = at_least_fp32(features.detach())
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


def mrf_patch_sum(features: Tensor, patches: Tensor, matches: Tensor, weights: Tensor) -> Tensor:
    """sum_i w_i |psi_i - psi^s_NN(i)|^2 over the k x k patches i of ``features`` (B, N, H, W), without unfolding
    them: sum_i w_i |psi_i|^2 = sum_p c_p |f_p|^2 (c_p: the weights of the patches covering position p) and
    sum_i w_i psi_i . t_i = sum_p f_p . fold(w t)_p, so autograd keeps only (N, H, W) tensors. fold(w t) is summed
    one of the k^2 patch offsets at a time and |t_i|^2 is gathered from the style patches' norms, so the matched
    patches (B, L, N k^2: 1.8 GB at conv1_1 of a 1024 x 768 image) never exist whole."""
    n, h, w_ = features.shape[1:]
    k = round((patches.shape[1] / n) ** 0.5)
    lh, lw = h - k + 1, w_ - k + 1
    style = patches.to(features.dtype)
    cover = F.fold(weights[:, None, :].expand(-1, k * k, -1), (h, w_), k)  # B|1, 1, H, W
    folded = torch.zeros(matches.shape[0], n, h, w_, dtype=features.dtype, device=features.device)
    by_offset = style.view(-1, n, k, k)
    for dy in range(k):
        for dx in range(k):
            part = (weights[..., None] * by_offset[:, :, dy, dx][matches]).transpose(1, 2)  # B, N, L
            folded[:, :, dy : dy + lh, dx : dx + lw] += part.reshape(-1, n, lh, lw)
    own = (features.pow(2).sum(1, keepdim=True) * cover).flatten(1).sum(1)
    cross = (features * folded).flatten(1).sum(1)
    matched = (weights * style.pow(2).sum(1)[matches]).sum(1)
    return own - 2.0 * cross + matched


class MRF(StyleStatistic):
    """E_s of Li & Wand 2016 ("Combining Markov Random Fields and Convolutional Neural Networks for Image
    Synthesis", CVPR, eq. 2): every k x k patch psi_i of the generated features is matched to the style patch with
    the highest normalised cross-correlation (``mrf_matches``, held fixed by the gradient), and

        L = sum_i w_i |psi_i - psi^s_NN(i)|^2 / (N k^2 sum_i w_i),

    the mean squared difference per patch entry (w_i = 1; with a mask, the mask at the patch's centre). The style
    keeps at most ``max_patches`` patches (a seeded subsample); a style layer smaller than k x k gives patches of
    its own size. A local loss: its summary is the sum and the weight, and a tile reads ``context`` = k - 1 more
    positions to complete its patches."""

    calibration = 1.5e4

    bytes_per_element = 10

    def __init__(self, style: Tensor, *, max_patches: int = 1024, patch_size: int = 3, seed: int = 0) -> None:
        super().__init__()
        k = min(patch_size, *style.shape[-2:])
        self.k = k
        with torch.no_grad(), exact(style):
            p = _subsample(F.unfold(at_least_fp32(style[:1]), k)[0].transpose(0, 1), max_patches, seed)  # P, N k^2
            self.register_buffer("patches", p)
            self.register_buffer("normalised", p / p.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @property
    def context(self) -> int:  # type: ignore[override]
        return self.k - 1

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        f = at_least_fp32(features)
        h, w = f.shape[-2:]
        k = self.k
        if h < k or w < k:  # no patch fits: nothing to match (0, with a graph for backward)
            zero = f.flatten(1).sum(1) * 0.0
            weight = torch.zeros(1 if mask is None else mask.shape[0], dtype=f.dtype, device=f.device)
            return {"sum": zero, "weight": weight}
        lh, lw = h - k + 1, w - k + 1
        if mask is None:
            weights = torch.ones(1, lh * lw, dtype=f.dtype, device=f.device)
        else:
            c = k // 2
            weights = at_least_fp32(mask)[..., c : c + lh, c : c + lw].flatten(1).to(f.dtype)
        matches = mrf_matches(f, self.normalised)
        return {"sum": mrf_patch_sum(f, self.patches, matches, weights), "weight": weights.sum(1)}

    def loss(self, summary: Summary) -> Tensor:
        return summary["sum"] / (summary["weight"].clamp_min(1e-12) * self.patches.shape[1])


@torch.no_grad()
def blend_statistics(statistics: Sequence[StyleStatistic], blend: Sequence[float]) -> StyleStatistic:
    """The first statistic, its buffers replaced by the blend sum_i b_i T_i of every statistic's: for
    ``blend_targets`` statistics (Gram: sum_i b_i |G - A_i|^2 = |G - sum_i b_i A_i|^2 + a constant when the b_i sum
    to 1), several styles compared at the cost of one."""
    first = statistics[0]
    buffers = [dict(s.named_buffers()) for s in statistics]
    for name, buffer in first.named_buffers():
        buffer.copy_(sum(b * own[name] for b, own in zip(blend, buffers, strict=True)))
    return first


def check_tileable(statistic: type[StyleStatistic] | StyleStatistic, name: str) -> None:
    """One line for a statistic that cannot run in exact tiles."""
    if not statistic.tileable:
        raise NSTError(
            f"style_loss={name} cannot run in tiles (its loss is not a function of sums over positions): "
            "set engine.tile=null, or lower size until it fits untiled"
        )


__all__ = [
    "MMD",
    "MRF",
    "GaussianW2",
    "Gram",
    "MeanStd",
    "SlicedWasserstein",
    "StyleStatistic",
    "draw_positions",
    "draw_projections",
]
