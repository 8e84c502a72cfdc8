"""The reference for the framework-overhead benchmark: Gatys et al. as a plain PyTorch L-BFGS loop.

The same math as nst_lightning's StyleTransfer, with nothing around it: the same frozen network
(nst_lightning.vgg), the same losses (nst_lightning.losses), the same targets (P and A/M, once), L-BFGS
with ``max_iter=1`` and no line search so that one step is one forward + backward, and the same scaling
(L-BFGS is handed L / L_0). No logging, no progress bar, no finiteness checks, no copies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nst_lightning.losses import content_loss, gram_over_m, style_layer_loss
from nst_lightning.vgg import VGG19Features


def plain_style_transfer(
    network: VGG19Features,
    content: Tensor,
    style: Tensor,
    init: Tensor,
    content_layer: str,
    style_weights: dict[str, float],
    alpha: float,
    beta: float,
    steps: int,
    lr: float = 1.0,
    history_size: int = 100,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Optimise ``init`` for ``steps`` L-BFGS steps; ``on_step(i)`` is called after each. Returns the image."""
    with torch.no_grad():
        content_target = network(content)[content_layer]
        style_features = network(style)
        style_targets = {name: gram_over_m(style_features[name])[0] for name in style_weights}
    image = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [image], lr=lr, max_iter=1, history_size=history_size, tolerance_grad=-1, tolerance_change=-1
    )
    loss_scale: list[float] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        features = network(image)
        style = sum(w * style_layer_loss(features[n], style_targets[n]) for n, w in style_weights.items())
        loss = (alpha * content_loss(features[content_layer], content_target) + beta * style).sum()
        if not loss_scale:
            loss_scale.append(max(float(loss.detach()), 1e-30))
        (loss / loss_scale[0]).backward()
        return loss

    for i in range(steps):
        optimizer.step(closure)
        if on_step is not None:
            on_step(i)
    return image.detach()


@torch.no_grad()
def total_loss(
    network: VGG19Features,
    content: Tensor,
    style: Tensor,
    image: Tensor,
    content_layer: str,
    style_weights: dict[str, float],
    alpha: float,
    beta: float,
) -> float:
    """Our loss, alpha L_content + beta L_style, of one image, in float32 (outside any autocast)."""
    with torch.autocast(device_type=image.device.type, enabled=False):
        content_target = network(content.float())[content_layer]
        style_features = network(style.float())
        features = network(image.float())
        style_loss = sum(
            w * style_layer_loss(features[n], gram_over_m(style_features[n])[0]) for n, w in style_weights.items()
        )
        loss = alpha * content_loss(features[content_layer], content_target) + beta * style_loss
    return float(loss.sum())
