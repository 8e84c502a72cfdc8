"""Colour and the other terms beyond the paper, checked against their closed forms."""

from __future__ import annotations

import pytest
import torch

from nst_lightning.model.color import color_stats, luminance, match_color, matched_luminance, rgb_to_yiq, with_chroma
from nst_lightning.model.losses import color_loss, gram_over_m, style_layer_loss, temporal_loss


def smooth_image(seed: int, shape: tuple[int, ...] = (1, 3, 12, 10)) -> torch.Tensor:
    """Pixels well inside (0, 1), so recolouring does not clip."""
    return 0.3 + 0.4 * torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_yiq_round_trip_and_grey_luminance():
    image = smooth_image(0)
    assert torch.allclose(with_chroma(image, image), image, atol=1e-6)
    grey = luminance(image)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    assert torch.allclose(rgb_to_yiq(grey)[:, 1:], torch.zeros_like(grey[:, 1:]), atol=1e-6)  # no chroma left
    expected_y = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    assert torch.allclose(grey[:, 0], expected_y)


def test_match_color_gives_the_reference_mean_and_covariance():
    image, reference = smooth_image(1), 0.8 * smooth_image(2) + torch.tensor([0.05, 0.1, 0.0]).view(1, 3, 1, 1)
    out = match_color(image, reference)
    (mean_out, cov_out), (mean_ref, cov_ref) = color_stats(out), color_stats(reference)
    assert torch.allclose(mean_out, mean_ref, atol=1e-4)
    assert torch.allclose(cov_out, cov_ref, atol=2e-4)


def test_matched_luminance_takes_the_content_mean_and_deviation():
    style, content = smooth_image(3), smooth_image(4) * 0.5
    y = matched_luminance(style, content)[:, 0]
    yc = rgb_to_yiq(content)[:, 0]
    assert float(y.mean()) == pytest.approx(float(yc.mean()), abs=1e-5)
    assert float(y.std()) == pytest.approx(float(yc.std()), rel=1e-4)


def test_color_loss_gradient_matches_the_closed_form():
    """L = 255^2 M/2 (|mu - mu_t|^2 + |C - C_t|^2)
    =>  dL/dx_cp = 255^2 ((mu - mu_t)_c + 2 sum_j (C - C_t)_cj (x_jp - mu_j))."""
    x = smooth_image(5).requires_grad_()
    mean_t, cov_t = color_stats(smooth_image(6))
    loss = color_loss(x, mean_t, cov_t)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    mean, cov = color_stats(x.detach())
    flat = x.detach().flatten(2) - mean[..., None]
    expected = 255.0**2 * ((mean - mean_t)[..., None] + 2 * (cov - cov_t) @ flat)
    assert torch.allclose(grad.flatten(2), expected, rtol=1e-6, atol=1e-9)
    assert float(color_loss(x.detach(), *color_stats(x.detach()))) == pytest.approx(0.0, abs=1e-12)


def test_temporal_loss_gradient_matches_the_closed_form():
    """L = 1/2 sum (255 x - 255 t)^2  =>  dL/dx = 255^2 (x - t)."""
    x, t = smooth_image(7).requires_grad_(), smooth_image(8)
    (grad,) = torch.autograd.grad(temporal_loss(x, t).sum(), x)
    assert torch.allclose(grad, 255.0**2 * (x.detach() - t))


def test_masked_gram_is_the_gram_of_the_white_region():
    features = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    mask = torch.zeros(1, 1, 6, 8, dtype=torch.float64)
    mask[..., :3] = 1  # the left three columns
    assert torch.allclose(gram_over_m(features, mask), gram_over_m(features[..., :3].contiguous()))
    target = gram_over_m(torch.randn(1, 4, 5, 5, dtype=torch.float64))[0]
    masked = style_layer_loss(features, target, mask)
    assert torch.allclose(masked, style_layer_loss(features[..., :3].contiguous(), target))
    assert torch.allclose(gram_over_m(features, torch.ones_like(mask)), gram_over_m(features))
