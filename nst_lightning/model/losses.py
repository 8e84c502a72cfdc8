"""The paper's equations (Gatys et al., CVPR 2016, eqs. 1-7) as small pure functions.

Every function takes features of shape (B, N_l, H, W) and returns one value per image, shape (B,),
so a batch of independent images gives independent losses.

Large sums: Gram entries grow with M_l (and with the 0-255 input scale), their squared differences
with the square of that. We therefore compare G/M_l and fold the constants:
    E_l = 1/(4 N^2 M^2) sum (G - A)^2 = 1/(4 N^2) sum (G/M - A/M)^2,
which is the same number, kept in a range where float32 does not overflow, even at 1024 px (G itself, for
conv1_1 at 1024 px, stays below 1e13). All of this runs in float32, also under bf16 autocast.

The style statistics other than the paper's (and the paper's as a module with its target) are in statistics.py.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nst_lightning.model.color import color_stats


def at_least_fp32(x: Tensor) -> Tensor:
    """Half and bfloat16 go up to float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """L_content = 1/2 sum_ij (F_ij - P_ij)^2   (eq. 1)."""
    diff = at_least_fp32(features) - at_least_fp32(target)
    return 0.5 * diff.pow(2).sum((1, 2, 3))


def positions_by_channels(features: Tensor) -> Tensor:
    """(B, N, H, W) -> (B, M, N), F transposed: a free view of the network's channels-last features."""
    return features.movedim(1, -1).flatten(1, 2)


def gram_matrix(features: Tensor) -> Tensor:
    """G_ij = sum_k F_ik F_jk   (eq. 3): the paper's Gram matrix, shape (B, N, N)."""
    f_t = positions_by_channels(at_least_fp32(features))
    return f_t.transpose(1, 2) @ f_t


class _SymmetricProduct(torch.autograd.Function):
    """X^T X from X (B, M, N), with the gradient of a symmetric product written out: d(X^T X)/dX applied to dG is
    X (dG + dG^T), one matrix product. Autograd would differentiate the two operands separately (two products);
    benchmarks/step_parts.py measures the difference."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.transpose(1, 2) @ x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return x @ (grad + grad.transpose(1, 2))


def symmetric_product(x: Tensor) -> Tensor:
    """sum_k x_ki x_kj for x (B, M, N): the Gram matrix of the rows, (B, N, N)."""
    return _SymmetricProduct.apply(x)


def gram_over_m(features: Tensor, mask: Tensor | None = None) -> Tensor:
    """G / M_l, shape (B, N, N).

    With a ``mask`` (shape (B or 1, 1, H, W), values in [0, 1], at this layer's resolution) the positions
    are weighted by it and M_l becomes the mask's area: the Gram matrix of the masked region only.
    """
    f = at_least_fp32(features)
    if mask is None:
        f_t = positions_by_channels(f)
        return symmetric_product(f_t) / f_t.shape[1]
    # sum_k m_k F_ik F_jk / sum_k m_k: for a binary mask, G over the white positions over their count
    area = mask.flatten(1).sum(1).clamp_min(1e-6)  # B
    f_t = positions_by_channels(f * mask.sqrt()) / area.sqrt()[:, None, None]
    return f_t.transpose(1, 2) @ f_t


def style_layer_loss(features: Tensor, target_gram_over_m: Tensor, mask: Tensor | None = None) -> Tensor:
    """E_l = 1/(4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2   (eq. 4), from G/M and A/M.

    ``target_gram_over_m`` is A/M_l of the style image (shape (N, N) or (B, N, N)); ``mask``: see gram_over_m.
    """
    n = features.shape[1]
    diff = gram_over_m(features, mask) - at_least_fp32(target_gram_over_m)
    return diff.pow(2).flatten(1).sum(1) / (4.0 * n * n)


def total_variation(image: Tensor) -> Tensor:
    """Sum of squared differences between neighbouring pixels (a smoothness prior), per image."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return at_least_fp32(dx).pow(2).flatten(1).sum(1) + at_least_fp32(dy).pow(2).flatten(1).sum(1)


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
    return 0.5 * (255.0 * (at_least_fp32(image) - at_least_fp32(target))).pow(2).flatten(1).sum(1)


class TotalVariation(torch.nn.Module):
    """``total_variation`` of the images, as a term of the objective."""

    def forward(self, image: Tensor) -> Tensor:
        return total_variation(image)


class ColorStatistics(torch.nn.Module):
    """``color_loss`` against a reference's RGB mean (1, 3) and covariance (1, 3, 3), held as buffers."""

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("cov", cov)

    def forward(self, image: Tensor) -> Tensor:
        return color_loss(image, self.mean, self.cov)


class Temporal(torch.nn.Module):
    """``temporal_loss`` towards a target image (the previous stylised frame), held as a buffer."""

    def __init__(self, target: Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target)

    def forward(self, image: Tensor) -> Tensor:
        return temporal_loss(image, self.target)
