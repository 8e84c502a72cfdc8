"""The losses against the paper's closed forms (Gatys et al. 2016, eqs. 1-7)."""

import pytest
import torch

from nst_lightning.model.losses import (
    content_loss,
    gram_matrix,
    gram_over_m,
    style_layer_loss,
    style_loss,
    total_variation,
)

torch.manual_seed(0)


def relu_features(n=6, h=5, w=4, batch=1):
    # Rectified features with exact zeros, as the network produces them.
    return torch.relu(torch.randn(batch, n, h, w, dtype=torch.float64))


def test_content_loss_value_and_gradient_match_eq_1_and_2():
    pre = torch.randn(1, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    f = torch.relu(pre)  # the loss is taken on the rectified output, as in the paper
    p = relu_features()
    loss = content_loss(f, p)
    assert torch.allclose(loss, 0.5 * ((f - p) ** 2).sum())
    (grad,) = torch.autograd.grad(loss.sum(), pre)
    # dL/dF = (F - P) where F > 0, and 0 where the unit is off (eq. 2)
    expected = torch.where(pre > 0, f - p, torch.zeros_like(f))
    assert torch.allclose(grad, expected)
    assert (grad[pre <= 0] == 0).all() and (grad[pre > 0] != 0).any()


def test_gram_matrix_is_inner_product_of_feature_maps():
    f = relu_features()
    g = gram_matrix(f)[0]
    flat = f[0].reshape(6, -1)
    for i in range(6):
        for j in range(6):
            assert torch.isclose(g[i, j], (flat[i] * flat[j]).sum())
    assert torch.allclose(gram_over_m(f), gram_matrix(f) / flat.shape[1], rtol=1e-5)


def paper_e_l(f, a_gram):
    n, m = f.shape[1], f.shape[2] * f.shape[3]
    return ((gram_matrix(f) - a_gram) ** 2).sum() / (4 * n**2 * m**2)


def test_style_layer_loss_equals_eq_4():
    f, a = relu_features(), relu_features()
    a.shape[2] * a.shape[3]
    expected = paper_e_l(f, gram_matrix(a))
    got = style_layer_loss(f, gram_over_m(a)[0])
    assert torch.allclose(got, expected.reshape(1), rtol=1e-5)


def test_style_layer_gradient_matches_eq_6():
    pre = torch.randn(1, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    f = torch.relu(pre)
    a = relu_features()
    loss = style_layer_loss(f, gram_over_m(a)[0])
    (grad,) = torch.autograd.grad(loss.sum(), pre)
    n, m = 6, 20
    flat = f.detach()[0].reshape(n, m)
    g, a_g = gram_matrix(f.detach())[0], gram_matrix(a)[0]
    # dE/dF_ij = 1/(N^2 M^2) ((F^T (G - A))^T)_ij where F_ij > 0, else 0 (eq. 6)
    closed = ((flat.T @ (g - a_g)).T / (n**2 * m**2)).reshape(1, n, 5, 4)
    expected = torch.where(pre > 0, closed, torch.zeros_like(pre))
    assert torch.allclose(grad, expected, rtol=1e-10)
    assert (grad[pre > 0] != 0).any()


@pytest.mark.parametrize("channels_last", [False, True])
def test_gram_over_m_has_autograds_gradient_in_a_batch(channels_last):
    """gram_over_m's hand-written backward ((dG + dG^T) F / M) against finite differences, float64, two images."""
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_(True)
    weights = torch.randn(2, 4, 4, dtype=torch.float64)  # an asymmetric dG
    assert torch.autograd.gradcheck(lambda f: (gram_over_m(f) * weights).sum(), (x,))
    expected = torch.einsum("bnk,bmk->bnm", x.detach().flatten(2), x.detach().flatten(2)) / 15
    assert torch.allclose(gram_over_m(x), expected, rtol=1e-12)


def test_style_loss_weights_layers_eq_5():
    e = {"conv1_1": torch.tensor([2.0]), "conv2_1": torch.tensor([10.0])}
    assert torch.allclose(style_loss(e, {"conv1_1": 0.25, "conv2_1": 0.5}), torch.tensor([5.5]))


def test_losses_are_per_image_in_a_batch():
    f, p = relu_features(batch=3), relu_features(batch=3)
    per_image = content_loss(f, p)
    assert per_image.shape == (3,)
    assert torch.allclose(per_image[1], content_loss(f[1:2], p[1:2])[0])
    a = gram_over_m(relu_features())[0]
    e = style_layer_loss(f, a)
    assert torch.allclose(e[2], style_layer_loss(f[2:3], a)[0])


def test_no_overflow_at_1024_px_scale_in_float32_and_bf16():
    # conv4_1 of a 1024 px image: 512 maps of 128x128, activations in the thousands (0-255 input).
    f = torch.rand(1, 512, 128, 128) * 3000
    a = gram_over_m(torch.rand(1, 512, 128, 128) * 1000)[0]
    for dtype in (torch.float32, torch.bfloat16):
        e = style_layer_loss(f.to(dtype), a)
        c = content_loss(f.to(dtype), torch.zeros_like(f))
        assert torch.isfinite(e).all() and torch.isfinite(c).all()
    # and the value is the paper's: G/M ~ 2.25e6 per entry -> E_l ~ (2.25e6 - 0.25e6)^2 / 4 ~ 1e12
    ref = style_layer_loss(f.double(), a.double())
    assert torch.allclose(style_layer_loss(f, a).double(), ref, rtol=1e-3)
    raw_gram_entry = float(gram_matrix(f[:, :1])[0, 0, 0])
    assert raw_gram_entry > 1e10  # the raw sums the scaling avoids squaring


def test_total_variation_of_constant_is_zero_and_of_ramp_is_known():
    assert total_variation(torch.ones(1, 3, 8, 8)).item() == 0
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 3, 4)
    assert total_variation(ramp).item() == 3 * 3  # 3 rows x 3 unit steps, squared
