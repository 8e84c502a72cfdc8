"""The standard contender: Gatys et al. as the usual PyTorch port writes it, independent of nst_lightning's
objective and optimiser (it shares only the network and the images).

- Pixels in 0-255 units: the optimised image holds values in 0-255 and the network is fed x / 255 (our network
  takes [0, 1] and does the Caffe preprocessing itself, so it sees the very same input).
- The paper's raw loss, with no rescaling of any kind:
      L = alpha L_content + beta sum_l w_l E_l,   L_content = 1/2 sum_ij (F_ij - P_ij)^2,
      E_l = 1 / (4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2,   G = F F^T over the M_l positions of layer l,
  written out below with plain torch ops; the targets P and A are computed once. The paper's formula assumes a
  style image of the generated image's size; when its aspect differs (M_s positions at layer l, not M_l), A is
  the style's Gram per position times M_l: A = A_s M_l / M_s (as every per-position normalisation does).
- ``torch.optim.LBFGS(lr=1, max_iter=1, history_size=100)``, no line search, ``tolerance_grad=-1`` and
  ``tolerance_change=-1`` (never stop early): one evaluation per step.
- White-noise start: uniform pixels in [0, 255) from a seeded generator (the same draw as our ``init=noise``).

Float32 suffices: at 1024 px, conv1_1's raw Gram entries reach ~1e10 and the squared differences summed over
N^2 entries ~1e24, far below float32's 3e38.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def paper_gram(features: Tensor) -> Tensor:
    """G = F F^T, F the (N, M) matrix of one image's features (batch of one)."""
    f = features.float().reshape(features.shape[1], -1)
    return f @ f.T


class PaperLoss(nn.Module):
    """The paper's total loss of one image in 0-255 pixel units."""

    def __init__(
        self,
        network: nn.Module,
        content: Tensor,
        style: Tensor,
        content_layer: str,
        style_weights: dict[str, float],
        alpha: float,
        beta: float,
    ) -> None:
        super().__init__()
        self.network, self.content_layer, self.style_weights = network, content_layer, dict(style_weights)
        self.alpha, self.beta = alpha, beta
        with torch.no_grad():
            self.target_p = network(content)[content_layer].float()  # content, style: (1, 3, h, w) in [0, 1]
            style_features = network(style)
            self.target_a = {name: paper_gram(style_features[name]) for name in style_weights}
            self.style_m = {
                name: style_features[name].shape[2] * style_features[name].shape[3] for name in style_weights
            }

    def forward(self, pixels: Tensor) -> Tensor:
        features = self.network(pixels / 255.0)
        content = 0.5 * (features[self.content_layer].float() - self.target_p).pow(2).sum()
        style = pixels.new_zeros(())
        for name, weight in self.style_weights.items():
            f = features[name]
            n, m = f.shape[1], f.shape[2] * f.shape[3]
            target = self.target_a[name] * (m / self.style_m[name])
            style = style + weight * (paper_gram(f) - target).pow(2).sum() / (4.0 * n**2 * m**2)
        return self.alpha * content + self.beta * style


def white_noise_pixels(shape: tuple[int, ...], seed: int) -> Tensor:
    """Uniform pixels in [0, 255): 255 x the seeded torch.rand draw our ``init=noise`` starts from."""
    return 255.0 * torch.rand(shape, generator=torch.Generator().manual_seed(seed))


class StandardRun:
    """The standard loop one step at a time: white noise, then ``step()`` = one closure evaluation and one update."""

    def __init__(
        self, loss: PaperLoss, shape: tuple[int, ...], seed: int = 0, device: str | torch.device = "cpu"
    ) -> None:
        self.loss = loss
        self.pixels = white_noise_pixels(shape, seed).to(device).requires_grad_(True)
        self.optimizer = torch.optim.LBFGS(
            [self.pixels],
            lr=1,
            max_iter=1,
            history_size=100,
            line_search_fn=None,
            tolerance_grad=-1,
            tolerance_change=-1,
        )

    def closure(self) -> Tensor:
        self.optimizer.zero_grad()
        value = self.loss(self.pixels)
        value.backward()
        return value

    def step(self) -> None:
        self.optimizer.step(self.closure)

    def image(self) -> Tensor:
        """The image in [0, 1] units, (1, 3, H, W) on the CPU."""
        return (self.pixels.detach() / 255.0).cpu()


def standard_style_transfer(
    loss: PaperLoss,
    shape: tuple[int, ...],
    steps: int,
    seed: int = 0,
    keep: Iterable[int] = (),
    on_step: Callable[[int], None] | None = None,
    device: str | torch.device = "cpu",
) -> dict[int, Tensor]:
    """``steps`` L-BFGS steps from white noise; the image in [0, 1] units after each step in ``keep`` (and after the
    last), as {step: (1, 3, H, W) on the CPU}. ``on_step(i)`` after step i (0-based)."""
    run = StandardRun(loss, shape, seed, device)
    wanted, images = {*keep, steps}, {}
    for i in range(steps):
        run.step()
        if on_step is not None:
            on_step(i)
        if i + 1 in wanted:
            images[i + 1] = run.image()
    return images
