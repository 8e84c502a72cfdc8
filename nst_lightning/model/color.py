"""Colour: the statistics the colour loss matches, and the two ways of keeping the content's colours
(Gatys, Bethge, Hertzmann & Shechtman 2016, "Preserving Color in Neural Artistic Style Transfer",
arXiv:1606.05897).

- ``luminance``: the transfer runs on luminance only (Y of YIQ, the style's Y matched to the content's
  mean and deviation), then the result's Y is joined to the content's I and Q.
- ``histogram``: the style image is recoloured before the transfer by the affine map that gives it
  the content's RGB mean and covariance, x' = C_c^(1/2) C_s^(-1/2) (x - mu_s) + mu_c.

All images are (B, 3, H, W) RGB in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

# NTSC RGB -> YIQ (rows: Y, I, Q)
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _mix(image: Tensor, matrix: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def rgb_to_yiq(image: Tensor) -> Tensor:
    return _mix(image, _RGB_TO_YIQ)


def yiq_to_rgb(image: Tensor) -> Tensor:
    return _mix(image, _YIQ_TO_RGB)


def luminance(image: Tensor) -> Tensor:
    """Y as a grey RGB image (three equal channels), the input of a luminance-only transfer."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def matched_luminance(style: Tensor, content: Tensor) -> Tensor:
    """The style's luminance with the content's mean and standard deviation (the paper's eq. for L_s')."""
    ys, yc = rgb_to_yiq(style)[:, :1], rgb_to_yiq(content)[:, :1]
    y = (ys - ys.mean()) * (yc.std() / ys.std().clamp_min(1e-6)) + yc.mean()
    return y.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def with_chroma(grey: Tensor, chroma_source: Tensor) -> Tensor:
    """The luminance of ``grey`` joined to the I and Q channels of ``chroma_source`` (same size), clamped to [0, 1]."""
    y = rgb_to_yiq(grey)[:, :1]
    iq = rgb_to_yiq(chroma_source)[:, 1:].expand(y.shape[0], -1, -1, -1)
    return yiq_to_rgb(torch.cat([y, iq], 1)).clamp(0, 1)


def color_stats(image: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image RGB mean (B, 3) and covariance (B, 3, 3) over the pixels."""
    x = (image if image.dtype == torch.float64 else image.float()).flatten(2)  # B, 3, M
    mean = x.mean(2)
    centred = x - mean[..., None]
    return mean, centred @ centred.transpose(1, 2) / x.shape[-1]


def _sqrtm(cov: Tensor, inverse: bool = False) -> Tensor:
    """Symmetric (inverse) square root of a covariance matrix, regularised so a flat image does not blow up."""
    values, vectors = torch.linalg.eigh(cov.double() + 1e-5 * torch.eye(3, dtype=torch.float64, device=cov.device))
    values = values.clamp_min(1e-8).sqrt()
    values = 1 / values if inverse else values
    return (vectors @ torch.diag_embed(values) @ vectors.transpose(-1, -2)).to(cov.dtype)


def match_color(image: Tensor, reference: Tensor) -> Tensor:
    """``image`` recoloured to the RGB mean and covariance of ``reference`` (the ``histogram`` mode)."""
    mean_i, cov_i = color_stats(image)
    mean_r, cov_r = color_stats(reference)
    transform = _sqrtm(cov_r) @ _sqrtm(cov_i, inverse=True)  # B, 3, 3
    x = image.float().flatten(2) - mean_i[..., None]
    out = transform @ x + mean_r[..., None]
    return out.view_as(image).clamp(0, 1)
