"""The whole objective of Gatys et al. in one place, for K images at once:

    total_k = alpha_k L_content + beta_k sum_l w_kl E_l (+ tv, colour, temporal and any extra term, each weighted).

``Objective`` holds the frozen network, the targets (the content's P^l, each style statistic's buffers), the mask
and the per-image weights as (K,) and (K, layers) tensors, so ``.to(device)`` moves all of it and a CUDA graph can
capture a forward that reads them. ``forward(image)`` returns each term as a (K,) tensor: the paper's unscaled
L_content, L_style = sum_l w_l E_l and each E_l, the extra terms, and the weighted total.

Each network term is evaluated in two halves, ``summarise`` (features -> sums over positions) and ``loss`` (sums ->
value), so that exact tiles (tiles.py) can sum the summaries of an image's tiles: ``forward`` is
``terms(summarise(features(x)))`` on the whole image.

Several styles: a statistic with ``blend_targets`` (Gram) compares with one blended target, A = sum_i b_i A_i (for
blends summing to 1, sum_i b_i |G - A_i|^2 = |G - A|^2 + a constant: the blend of the losses at the cost of one);
the others compare with each style and blend the losses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nst_lightning.model.losses import at_least_fp32, content_loss
from nst_lightning.model.network import FeatureNetwork
from nst_lightning.model.statistics import Region, StyleStatistic, Summary, blend_statistics, full_region

StatisticFactory = Callable[[Tensor], StyleStatistic]


@dataclass
class Weights:
    """The loss weights of K images: alpha (K,) with the size balance folded in, which content layer each image
    uses (K, C) in ``content_layers`` order, beta (K,), w_l (K, S) in ``style_layers`` order with 0 where an image
    does not use a layer, and each extra term's weight (K,)."""

    content_layers: list[str]
    style_layers: list[str]
    alpha: Tensor
    content_select: Tensor
    beta: Tensor
    style: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


class ContentTerm(nn.Module):
    """L_content = 1/2 sum_ij (F_ij - P_ij)^2 at one layer (eq. 1), P held as a buffer. A local term: its summary
    is the sum over the positions it is given."""

    gathered: frozenset[str] = frozenset()
    context = 0

    def __init__(self, target: Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target)

    def summarise(self, features: Tensor, mask: Tensor | None = None, region: Region | None = None) -> Summary:
        top, left = (region or full_region(features))[:2]
        h, w = features.shape[-2:]
        return {"value": content_loss(features, self.target[..., top : top + h, left : left + w])}

    def loss(self, summary: Summary) -> Tensor:
        return summary["value"]


@dataclass(frozen=True)
class FeatureTerm:
    """One network term: content or one style image's statistic, at a layer."""

    kind: str  # "content" or "style"
    layer: str
    module: nn.Module
    blend: float = 1.0  # a style image's share of its layer's E_l


class Objective(nn.Module):
    """The K images' losses, each term a (K,) tensor; a term weighted 0 for every image is not computed and has no
    key. ``extras``: image-level terms {name: module mapping the images (K, 3, H, W) to (K,)}."""

    def __init__(
        self,
        network: FeatureNetwork,
        content: Tensor,
        content_targets: Mapping[str, Tensor],
        style_statistics: Mapping[str, Sequence[StyleStatistic]],
        blend: Sequence[float],
        weights: Weights,
        extras: Mapping[str, nn.Module] | None = None,
        mask: Tensor | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.autocast_dtype = autocast_dtype
        self.content_layers, self.style_layers = list(weights.content_layers), list(weights.style_layers)
        self.register_buffer("content", content)
        self.register_buffer("mask", mask)
        self.register_buffer("alpha", weights.alpha)
        self.register_buffer("content_select", weights.content_select)
        self.register_buffer("beta", weights.beta)
        self.register_buffer("style_w", weights.style)
        self.contents = nn.ModuleDict({layer: ContentTerm(content_targets[layer]) for layer in self.content_layers})
        self.styles = nn.ModuleDict()
        self.blends: dict[str, list[float]] = {}
        for layer in self.style_layers:
            statistics, shares = list(style_statistics[layer]), list(blend)
            if type(statistics[0]).blend_targets and len(statistics) > 1:
                statistics, shares = [blend_statistics(statistics, shares)], [1.0]
            self.styles[layer] = nn.ModuleList(statistics)
            self.blends[layer] = shares
        self.extras = nn.ModuleDict(dict(extras or {}))
        extra_w = [weights.extras[name] for name in self.extras]
        self.register_buffer("extra_w", torch.stack(extra_w, 1) if extra_w else None)  # (K, E) in extras order
        self.layer_shapes: dict[str, tuple[int, ...]] = {}
        self.terms_order = self.term_names()

    # ---- what the objective is made of --------------------------------------------------------------------------
    @property
    def feature_terms(self) -> list[FeatureTerm]:
        terms = [FeatureTerm("content", layer, self.contents[layer]) for layer in self.content_layers]
        for layer in self.style_layers:
            terms += [
                FeatureTerm("style", layer, s, b) for s, b in zip(self.styles[layer], self.blends[layer], strict=True)
            ]
        return terms

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(self.content_layers + self.style_layers))

    @property
    def draws_per_step(self) -> bool:
        """Whether a style statistic draws new samples each step (then a CUDA graph cannot replay the step)."""
        return any(s.draws_per_step for stats in self.styles.values() for s in stats)

    def term_names(self) -> list[str]:
        """The keys of ``forward``'s result, in order: total, the terms computed, then each style layer."""
        names = ["total"] + ["content"] * bool(self.content_layers) + ["style"] * bool(self.style_layers)
        return names + list(self.extras) + [f"style/{layer}" for layer in self.style_layers]

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def set_layer_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """The full image's feature shapes (B, N, H, W) per layer: what the statistics' per-step draws, the mask
        pooled to each layer and the tiles need."""
        self.layer_shapes = dict(shapes)

    def begin_step(self, step: int, images: int) -> None:
        """Draw the step's samples (sliced_wasserstein's projections, mmd's positions) from the seed and the step:
        fixed within the step, reproducible across runs and resumes."""
        for layer, statistics in self.styles.items():
            shape = (images, *self.layer_shapes[layer][1:])
            for statistic in statistics:
                statistic.begin_step(step, shape, self.content.device)

    def generated(self, image: Tensor) -> Tensor:
        """With a content_mask, the optimised pixels count only where the mask is white; the rest is the content."""
        return image if self.mask is None else self.mask * image + (1 - self.mask) * self.content

    def features(self, x: Tensor) -> dict[str, Tensor]:
        if not self.layers:  # tv or colour alone: no network term
            return {}
        if self.autocast_dtype is None:
            return self.network(x, self.layers)
        # cache_enabled=False: the weights' low-precision copies must not outlive a CUDA graph capture.
        with torch.autocast(x.device.type, dtype=self.autocast_dtype, cache_enabled=False):
            return self.network(x, self.layers)

    def summarise(self, features: Mapping[str, Tensor], regions: Mapping[str, Region] | None = None) -> list[Summary]:
        """Each network term's summary of ``features`` (the whole layer, or the part at ``regions``), in
        ``feature_terms`` order; float32 whatever the network's precision."""
        out: list[Summary] = []
        if not features:
            return out
        with torch.autocast(next(iter(features.values())).device.type, enabled=False):
            for term in self.feature_terms:
                f = features[term.layer]
                region = None if regions is None else regions[term.layer]
                out.append(term.module.summarise(f, self._mask(term, f, region), region))
        return out

    def _mask(self, term: FeatureTerm, features: Tensor, region: Region | None) -> Tensor | None:
        if term.kind != "style" or self.mask is None:
            return None
        shape = self.layer_shapes.get(term.layer, features.shape)[-2:]
        pooled = F.adaptive_avg_pool2d(self.mask, shape)  # the mask's own dtype and device, whatever they became
        if region is None:
            return pooled
        top, left = region[:2]
        return pooled[..., top : top + features.shape[-2], left : left + features.shape[-1]]

    def terms(
        self, summaries: Sequence[Summary], x: Tensor, extras: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """The (K,) terms from the network terms' summaries of the whole image and the image-level terms of ``x``
        (or their values, ``extras``, computed elsewhere)."""
        k = x.shape[0]
        out: dict[str, Tensor] = {}
        total = torch.zeros(k, device=x.device)
        with torch.autocast(x.device.type, enabled=False):
            content, style = {}, {layer: torch.zeros(k, device=x.device) for layer in self.style_layers}
            for term, summary in zip(self.feature_terms, summaries, strict=True):
                value = at_least_fp32(term.module.loss(summary)).expand(k)
                if term.kind == "content":
                    content[term.layer] = value
                else:
                    style[term.layer] = style[term.layer] + term.blend * value
            if self.content_layers:
                per_layer = torch.stack([content[layer] for layer in self.content_layers], 1)
                out["content"] = (per_layer * self.content_select).sum(1)  # each image's own content layer
                total = total + self.alpha * out["content"]
            if self.style_layers:
                out["style"] = (torch.stack(list(style.values()), 1) * self.style_w).sum(1)
                total = total + self.beta * out["style"]
            for i, (name, module) in enumerate(self.extras.items()):
                out[name] = extras[name] if extras is not None else module(x)
                total = total + self.extra_w[:, i] * out[name]
            out["total"] = total
            out.update({f"style/{layer}": value for layer, value in style.items()})
        return out

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = self.generated(image)
        return self.terms(self.summarise(self.features(x)), x)

    def keep_images(self, part: slice) -> None:
        """Keep the weights of images ``part`` of the batch only (a rank's share of it): the targets, the layers and
        the terms computed stay the whole batch's, so every share reports the same terms."""
        for name in ("alpha", "content_select", "beta", "style_w", "extra_w"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[part].clone())

    def stacked(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The terms as one (T, K) tensor in ``terms_order``: one row per term, for the device log."""
        return torch.stack([terms[name].detach().float() for name in self.terms_order])


@torch.no_grad()
def targets(
    network: FeatureNetwork,
    content: Tensor,
    styles: Sequence[Tensor],
    content_layers: Sequence[str],
    style_layers: Sequence[str],
    statistic: StatisticFactory,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[dict[str, Tensor], dict[str, list[StyleStatistic]], dict[str, tuple[int, ...]]]:
    """The content targets P^l, each style image's statistic at each style layer (built by ``statistic`` from the
    style's features), and the generated image's feature shape per layer: one network pass per image, whose
    features are reduced at once (a style larger than the output costs its own pass only)."""
    layers = list(dict.fromkeys([*content_layers, *style_layers]))
    if not layers:
        return {}, {}, {}

    def run(image: Tensor) -> dict[str, Tensor]:
        if autocast_dtype is None:
            return network(image, layers)
        with torch.autocast(image.device.type, dtype=autocast_dtype, cache_enabled=False):
            return network(image, layers)

    features = run(content)
    shapes = {layer: tuple(f.shape) for layer, f in features.items()}
    content_targets = {layer: features[layer].float() for layer in content_layers}
    del features
    statistics: dict[str, list[StyleStatistic]] = {layer: [] for layer in style_layers}
    for style in styles:
        features = run(style)
        for layer in style_layers:
            with torch.autocast(style.device.type, enabled=False):
                statistics[layer].append(statistic(features[layer].float()))
        del features
    return content_targets, statistics, shapes
