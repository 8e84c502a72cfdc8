"""The references of the framework-overhead benchmark: our objective and our L-BFGS with nothing around them.

- ``plain_style_transfer``: the product's math without the product's engine. The same plan as the run, the same
  prepared images, the same ``Objective`` and the same L-BFGS (``nst_lightning.optim.lbfgs.LBFGS``), all built by
  adapter.py as the run builds them, stepped in a plain Python loop: no Lightning, no logging, no divergence
  bookkeeping, no CUDA graph. ours / this is the framework's cost (or gain).
- ``network_only``: the cut network alone, a forward and a backward to the image of a dummy scalar (the sum of
  the features of the layers in use): no loss, no optimiser. ours / this is how far the step is from its limit.
- ``scaled_torch_lbfgs``: ``torch.optim.LBFGS`` (lr 1, ``max_iter=1``, no line search) on L / L_0 with pixels in
  [0, 1]: the stall benchmark's reference for PyTorch's optimiser on a normalised loss.
- ``objective_loss``: the loss of an image by an objective, in float32: every loss the benchmarks compare.
"""

from __future__ import annotations

from collections.abc import Callable

import adapter
import torch
from adapter import Objective, Plan
from torch import Tensor, nn


@torch.no_grad()
def objective_loss(objective: Objective, image: Tensor) -> list[float]:
    """The total loss of each image (K, 3, H, W) in [0, 1] units, by ``objective`` (build it with precision
    ``"32-true"`` for a float32 measure)."""
    device = next(iter(objective.buffers())).device
    return [float(v) for v in adapter.total_loss(objective, image.float().to(device))]


def plain_style_transfer(
    objective: Objective,
    init: Tensor,
    plan: Plan,
    steps: int,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """``steps`` steps of our L-BFGS (the plan's settings) on ``objective`` from ``init``; ``on_step(i)`` after each.
    Returns the images."""
    image = init.detach().clone().contiguous().requires_grad_(True)
    optimizer = adapter.our_lbfgs([image], plan)

    def closure() -> Tensor:
        image.grad = None
        total = adapter.total_loss(objective, image)
        total.sum().backward()  # the images are independent: the sum's gradient is each one's own
        return total.detach()

    for i in range(steps):
        optimizer.step(closure)
        if on_step is not None:
            on_step(i)
    return image.detach()


def network_only(network: nn.Module, image: Tensor, steps: int, on_step: Callable[[int], None] | None = None) -> None:
    """``steps`` forward + backward passes of ``network`` alone: the sum of the features of every layer it returns
    (a dummy scalar) differentiated with respect to the image. The limit of a step: the network's own cost."""
    x = image.detach().clone().requires_grad_(True)
    for i in range(steps):
        x.grad = None
        features = network(x)
        torch.stack([f.float().sum() for f in features.values()]).sum().backward()
        if on_step is not None:
            on_step(i)


def scaled_torch_lbfgs(
    objective: Objective, init: Tensor, steps: int, history_size: int = 100, lr: float = 1.0
) -> Tensor:
    """torch.optim.LBFGS (max_iter=1, no line search, no tolerances) on L / L_0 (L_0: the first evaluation's loss),
    pixels in [0, 1]. Returns the images."""
    image = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [image], lr=lr, max_iter=1, history_size=history_size, tolerance_grad=-1, tolerance_change=-1
    )
    scale: list[float] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = adapter.total_loss(objective, image).sum()
        if not scale:
            scale.append(max(float(loss.detach()), 1e-30))
        (loss / scale[0]).backward()
        return loss / scale[0]

    for _ in range(steps):
        optimizer.step(closure)
    return image.detach()
