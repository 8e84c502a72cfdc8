"""The whole objective of Gatys et al. in one place: alpha L_content + beta sum_l w_l E_l (+ tv, colour, temporal).

``Objective`` is built once per stage from the frozen network, the prepared images and the loss weights of the K
images of a batch. Everything it compares against is a buffer: the content targets P^l, the style targets (A^l/M_l
for the Gram statistic), the masks, and the per-image weights as (K,) and (K, layers) tensors; so ``.to(device)``
moves all of it and a CUDA graph can capture a forward that reads them. ``forward(image)`` returns each term as a
(K,) tensor: the paper's unscaled L_content, L_style = sum_l w_l E_l and each E_l, and the weighted total.

Several styles: for the Gram statistic A^l = sum_i b_i A_i^l. For blends summing to 1, sum_i b_i |G - A_i|^2 equals
|G - sum_i b_i A_i|^2 plus a constant, so this is the blend of the styles' losses at one comparison per layer.
Other statistics compare with each style and blend the losses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nst_lightning.config.plan import LossWeights, StyleLossSpec
from nst_lightning.inputs.prepare import Prepared
from nst_lightning.model.losses import (
    STYLE_LOSSES,
    StyleStatistic,
    blended_targets,
    color_loss,
    content_loss,
    temporal_loss,
    total_variation,
)

AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16, "16": torch.float16}


class StyleTerm(nn.Module):
    """One style layer: the style statistic of the style image(s), held as buffers, and the loss against them.

    The Gram statistic blends several styles' targets into one (A = sum_i b_i A_i); the others compare with each
    style and blend the losses. Statistics that draw per step (sliced_wasserstein's projections, mmd's positions)
    get their draws from ``begin_step``, fixed within the step so the objective L-BFGS sees is one function.
    """

    def __init__(
        self,
        stat: StyleStatistic,
        options: dict[str, Any],
        styles: list[Tensor],
        blend: list[float],
        mask: Tensor | None,
    ) -> None:
        super().__init__()
        self.stat, self.options = stat, options
        weighted = blended_targets(stat, [stat.make_target(f, options) for f in styles], blend)
        self.blend = [b for b, _ in weighted]
        self.keys = [list(t) for _, t in weighted]
        for i, (_, targets) in enumerate(weighted):
            for key, value in targets.items():
                self.register_buffer(f"t{i}_{key}", value)
        self.register_buffer("mask", mask)
        self.step_inputs: dict[str, Tensor] | None = None

    def begin_step(self, shape: tuple[int, ...], seed: int, step: int, device: torch.device) -> None:
        if self.stat.step_inputs is not None:
            self.step_inputs = self.stat.make_step_inputs(shape, seed, step, device, self.options)

    def forward(self, features: Tensor) -> Tensor:
        losses = [
            b * self.stat.layer_loss(features, self.mask, self.targets(i), self.step_inputs, self.options)
            for i, b in enumerate(self.blend)
        ]
        return torch.stack(losses).sum(0)

    def targets(self, i: int = 0) -> dict[str, Tensor]:
        return {key: getattr(self, f"t{i}_{key}") for key in self.keys[i]}


def _weights(values: Sequence[float]) -> Tensor:
    return torch.tensor(list(values), dtype=torch.float32)


class Objective(nn.Module):
    """The K images' losses, each term a (K,) tensor; a term weighted 0 for every image is not computed (its layers
    may not even be in the cut network) and has no key."""

    def __init__(
        self,
        network: nn.Module,
        prepared: Prepared,
        weights: Sequence[LossWeights],
        content_scale: float = 1.0,
        style_loss: StyleLossSpec | None = None,
        precision: str = "32-true",
    ) -> None:
        super().__init__()
        self.network = network
        self.style_loss = style_loss or StyleLossSpec()
        stat = STYLE_LOSSES[str(self.style_loss.name)]
        self.autocast_dtype = AUTOCAST.get(precision)
        p = prepared
        self.content_layers = list(dict.fromkeys(w.content_layer for w in weights if w.alpha > 0))
        self.style_layers = list(dict.fromkeys(n for w in weights if w.beta > 0 for n in w.style_weights))
        # Per-image weights as tensors: alpha (K,) with the size balance folded in, which content layer each image
        # uses (K, C), beta (K,), w_l (K, S) with 0 where an image does not use a layer, and the extras (K,).
        self.register_buffer("alpha", _weights([w.alpha * content_scale for w in weights]))
        self.register_buffer(
            "content_select",
            torch.tensor([[float(w.content_layer == c) for c in self.content_layers] for w in weights]),
        )
        # beta times the statistic's calibration (1 for the paper's Gram): another statistic keeps the balance.
        calibration = stat.calibration_for(self.style_loss.options)
        self.register_buffer("beta", _weights([w.beta * calibration for w in weights]))
        self.register_buffer(
            "style_w", torch.tensor([[w.style_weights.get(n, 0.0) for n in self.style_layers] for w in weights])
        )
        self.extras: list[tuple[str, Callable[[Tensor], Tensor]]] = []
        if any(w.tv for w in weights):
            self.extras.append(("tv", total_variation))
        if p.color_target is not None and any(w.color for w in weights):
            self.register_buffer("color_mean", p.color_target[0])
            self.register_buffer("color_cov", p.color_target[1])
            self.extras.append(("color", lambda x: color_loss(x, self.color_mean, self.color_cov)))
        if p.temporal_target is not None and any(w.temporal for w in weights):
            self.register_buffer("temporal_target", p.temporal_target)
            self.extras.append(("temporal", lambda x: temporal_loss(x, self.temporal_target)))
        for key, _ in self.extras:
            self.register_buffer(f"{key}_weight", _weights([getattr(w, key) for w in weights]))
        self.register_buffer("content", p.content)
        self.register_buffer("mask", p.mask)
        self._build_targets(p, stat)
        self.terms = self.term_names()
        self.begin_step(0, len(weights))

    @torch.no_grad()
    def _build_targets(self, p: Prepared, stat: StyleStatistic) -> None:
        if self.content_layers:
            features = self.network(p.content)
            for name in self.content_layers:
                self.register_buffer(f"P_{name}", features[name].float())
        self.style_terms = nn.ModuleDict()
        if self.style_layers:
            per_style = [self.network(style) for style in p.styles]
            generated = self.network(p.content)  # the generated image has the content's shape
            self.layer_shapes = {name: tuple(generated[name].shape) for name in self.style_layers}
            for name in self.style_layers:
                mask = None if self.mask is None else F.adaptive_avg_pool2d(self.mask, generated[name].shape[-2:])
                styles = [features[name].float() for features in per_style]
                self.style_terms[name] = StyleTerm(stat, dict(self.style_loss.options), styles, p.blend, mask)

    @property
    def draws_per_step(self) -> bool:
        """Whether the style statistic draws new samples each step (then a CUDA graph cannot replay the step)."""
        return STYLE_LOSSES[str(self.style_loss.name)].step_inputs is not None

    def begin_step(self, step: int, images: int) -> None:
        """Draw the step's samples (sliced_wasserstein's projections, mmd's positions) from the seed and the step:
        fixed within the step, reproducible across runs and resumes."""
        if self.draws_per_step:
            device = self.content.device
            for name, term in self.style_terms.items():
                shape = (images, *self.layer_shapes[name][1:])
                term.begin_step(shape, self.style_loss.seed, step, device)

    def term_names(self) -> list[str]:
        """The keys of ``forward``'s result, in order: total, the terms computed, then each style layer."""
        names = ["total"] + ["content"] * bool(self.content_layers) + ["style"] * bool(self.style_layers)
        return names + [key for key, _ in self.extras] + [f"style/{n}" for n in self.style_layers]

    def generated(self, image: Tensor) -> Tensor:
        """With a content_mask, the optimised pixels count only where the mask is white; the rest is the content."""
        return image if self.mask is None else self.mask * image + (1 - self.mask) * self.content

    def features(self, x: Tensor) -> dict[str, Tensor]:
        if self.autocast_dtype is None:
            return self.network(x)
        # cache_enabled=False: the weights' low-precision copies must not outlive a CUDA graph capture.
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, cache_enabled=False):
            return self.network(x)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = self.generated(image)
        features = self.features(x)
        out: dict[str, Tensor] = {}
        total = torch.zeros(x.shape[0], device=x.device)
        with torch.autocast(x.device.type, enabled=False):  # Gram matrices and sums in float32, even under bf16
            if self.content_layers:
                per_layer = torch.stack(
                    [content_loss(features[n], getattr(self, f"P_{n}")) for n in self.content_layers], 1
                )
                out["content"] = (per_layer * self.content_select).sum(1)  # each image's own content layer
                total = total + self.alpha * out["content"]
            if self.style_layers:
                e = {name: term(features[name]) for name, term in self.style_terms.items()}
                out["style"] = (torch.stack(list(e.values()), 1) * self.style_w).sum(1)
                total = total + self.beta * out["style"]
            for key, loss in self.extras:
                out[key] = loss(x)
                total = total + getattr(self, f"{key}_weight") * out[key]
            out["total"] = total
            if self.style_layers:
                out.update({f"style/{name}": value for name, value in e.items()})
        return out

    def stacked(self, terms: dict[str, Tensor]) -> Tensor:
        """The terms as one (T, K) tensor in ``self.terms`` order: one row per term, for the device log."""
        return torch.stack([terms[name].detach().float() for name in self.terms])
