"""Exact tiles: the objective's loss and gradient of an image of any size, from tiles, in memory bounded by a tile.

Every network term of the objective is a function of sums over positions (``StyleStatistic.summarise``; the
content loss and MRF's patches are sums of local values). So one evaluation runs in two passes over the tiles:

1. without autograd, each tile's features, taken over the positions the tile *owns*, add to every term's summary
   (gathered values are concatenated): the summaries of the whole image, hence its loss, exactly;
2. with autograd, tile by tile, the surrogate sum_key <dL/dS_key, S_key(tile)> (dL/dS from the loss of the whole
   summaries, held fixed) is backpropagated to the tile's pixels: since S = sum over tiles of S(tile),
   dL/dpixels = sum over tiles of dL/dS dS(tile)/dpixels, the gradient, exactly.

Two rules make a tile's features identical to the whole image's: a tile's own region and its crop start on the
network's grid (a multiple of the deepest layer's stride: 16 for conv5_1), and the crop carries a halo of at least
the deepest layer's reach (``FeatureNetwork.reach``, read from its modules: 70 px for VGG19's conv5_1, 80 on the
grid) plus the context a local term reads beyond its own positions (MRF's k - 1 positions), so that zero padding only
ever meets the image's own border, as in the untiled network. No seams and no blending, by construction; the
loss and gradient are the untiled ones up to the order of floating-point sums.

Image-level terms (total variation, colour, temporal, extra terms) see the whole image: they are small beside the
network's features. With several processes (``reduce``), each takes every world-th tile; the summaries are summed
(gathered) across them after pass 1 and the gradient after pass 2, so every process holds the same numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from nst_lightning.model.statistics import Summary

Box = tuple[int, int, int, int]  # top, bottom, left, right, in pixels of the image


@dataclass(frozen=True)
class Tile:
    own: Box  # the pixels whose positions this tile owns
    crop: Box  # what it computes: its own pixels and a halo, within the image


@dataclass(frozen=True)
class Tiling:
    """The tiles of an image of ``height`` x ``width`` pixels, and the image's size (their regions need it)."""

    tiles: tuple[Tile, ...]
    height: int
    width: int
    grid: int
    halo: int


class Reduce(Protocol):
    """What several processes exchange (nst_lightning.engine.distributed)."""

    rank: int
    world: int

    def sum(self, tensor: Tensor) -> Tensor: ...

    def gather(self, tensor: Tensor) -> Tensor:
        """The tensors of every process concatenated along dimension 1, in rank order."""
        ...


def _steps(size: int, tile: int) -> list[tuple[int, int]]:
    starts = list(range(0, size, tile))
    return [(s, min(s + tile, size)) for s in starts]


def tiling(height: int, width: int, tile: int, grid: int, halo: int) -> Tiling:
    """Tiles of side ``tile`` (rounded down to the grid, at least one grid cell), each with ``halo`` (a multiple of
    the grid) on every side that is not the image's border."""
    side = max(grid, tile // grid * grid)
    tiles = []
    for top, bottom in _steps(height, side):
        for left, right in _steps(width, side):
            crop = (max(0, top - halo), min(height, bottom + halo), max(0, left - halo), min(width, right + halo))
            tiles.append(Tile((top, bottom, left, right), crop))
    return Tiling(tuple(tiles), height, width, grid, halo)


def grid_and_halo(network: Any, layers: Sequence[str], context: dict[str, int] | None = None) -> tuple[int, int]:
    """The grid (the largest stride of ``layers``) and the halo a tile needs: the largest reach of the layers plus
    the context (in positions) a local term reads there, in pixels, rounded up to the grid."""
    context = context or {}
    grid = math.lcm(*(network.stride(layer) for layer in layers)) if layers else 1
    need = max((network.reach(layer) + context.get(layer, 0) * network.stride(layer) for layer in layers), default=0)
    return grid, -(-need // grid) * grid


def layer_slices(tile: Tile, tiling_: Tiling, stride: int, shape: Sequence[int], context: int) -> tuple[Any, Any, Any]:
    """(rows, columns) of a tile's own positions (plus ``context`` more after them) within the features of its
    crop at a layer of ``stride`` whose whole maps are ``shape`` (..., H_l, W_l); and the region (top, left, H_l,
    W_l) of the layer's grid those positions are."""
    h_l, w_l = int(shape[-2]), int(shape[-1])
    top, bottom, left, right = tile.own
    r0, c0 = top // stride, left // stride
    r1 = h_l if bottom == tiling_.height else bottom // stride
    c1 = w_l if right == tiling_.width else right // stride
    r1, c1 = min(r1 + context, h_l), min(c1 + context, w_l)
    dr, dc = tile.crop[0] // stride, tile.crop[2] // stride
    return slice(r0 - dr, r1 - dr), slice(c0 - dc, c1 - dc), (r0, c0, h_l, w_l)


def _crop(image: Tensor, box: Box) -> Tensor:
    return image[..., box[0] : box[1], box[2] : box[3]]


def _own_features(objective: Any, image: Tensor, tile: Tile, tiling_: Tiling) -> tuple[dict, dict]:
    """The tile's features cropped to each term's positions, and their regions, keyed by term index."""
    x = _crop(image, tile.crop)
    if objective.mask is not None:  # the blend with the content (Objective.generated), on the crop
        mask = _crop(objective.mask, tile.crop)
        x = mask * x + (1 - mask) * _crop(objective.content, tile.crop)
    features = objective.features(x)
    own, regions = {}, {}
    for i, term in enumerate(objective.feature_terms):
        stride = objective.network.stride(term.layer)
        rows, cols, region = layer_slices(
            tile, tiling_, stride, objective.layer_shapes[term.layer], term.module.context
        )
        own[i] = features[term.layer][..., rows, cols]
        regions[i] = region
    return own, regions


def _summaries(objective: Any, own: dict, regions: dict) -> list[Summary]:
    out = []
    with torch.autocast(next(iter(own.values())).device.type, enabled=False):
        for i, term in enumerate(objective.feature_terms):
            mask = objective._mask(term, own[i], regions[i])
            out.append(term.module.summarise(own[i], mask, regions[i]))
    return out


def _add(total: list[dict[str, Any]] | None, tile: list[Summary], objective: Any) -> list[dict[str, Any]]:
    """The running summaries with one more tile's: sums added, gathered values listed (concatenated at the end).
    Only the running sums are held, never every tile's summaries (at 4096 px in 256 px tiles, 192 copies of every
    Gram matrix)."""
    if total is None:
        total = [{} for _ in tile]
    for i, term in enumerate(objective.feature_terms):
        for key, value in tile[i].items():
            if key in term.module.gathered:
                total[i].setdefault(key, []).append(value)
            else:
                total[i][key] = value if key not in total[i] else total[i][key] + value
    return total


def _exchange(summaries: list[Summary], objective: Any, reduce: Reduce | None) -> list[Summary]:
    if reduce is None or reduce.world == 1:
        return summaries
    out = []
    for term, summary in zip(objective.feature_terms, summaries, strict=True):
        gathered = term.module.gathered
        out.append({k: reduce.gather(v) if k in gathered else reduce.sum(v) for k, v in summary.items()})
    return out


def mine(tiling_: Tiling, reduce: Reduce | None) -> tuple[Tile, ...]:
    """This process's tiles: every world-th one."""
    if reduce is None or reduce.world == 1:
        return tiling_.tiles
    return tiling_.tiles[reduce.rank :: reduce.world]


@torch.no_grad()
def first_pass(
    objective: Any, image: Tensor, tiling_: Tiling, reduce: Reduce | None = None
) -> tuple[list[Summary], list[dict[str, list[int]]]]:
    """The whole image's summaries (every process's, after the exchange), and for each term the sizes along
    dimension 1 of this process's tiles' gathered values, tile by tile."""
    total = None
    with torch.no_grad():  # pass 2 recomputes each tile with autograd: no tile's graph may outlive its pass
        for tile in mine(tiling_, reduce):
            own, regions = _own_features(objective, image, tile, tiling_)
            total = _add(total, _summaries(objective, own, regions), objective)
            del own  # the features of the next tile take their place
    assert total is not None, "every process has at least one tile"
    sizes = [
        {key: [v.shape[1] for v in values] for key, values in s.items() if isinstance(values, list)} for s in total
    ]
    summaries = [{key: torch.cat(v, 1) if isinstance(v, list) else v for key, v in s.items()} for s in total]
    return _exchange(summaries, objective, reduce), sizes


def values(objective: Any, image: Tensor, tiling_: Tiling, reduce: Reduce | None = None) -> dict[str, Tensor]:
    """The terms (K,) of ``image`` from its tiles, without a gradient."""
    summaries, _ = first_pass(objective, image, tiling_, reduce)
    with torch.no_grad():
        return objective.terms(summaries, objective.generated(image))


def _gathered_offsets(sizes: list[dict[str, list[int]]], device: torch.device, reduce: Reduce | None) -> list[dict]:
    """Where each of this process's tiles' gathered values sit along dimension 1 of the whole summary."""
    offsets: list[dict[str, list]] = []
    for by_key in sizes:
        found = {}
        for key in sorted(by_key):  # the same order on every process: each gather is a collective
            own, start = by_key[key], 0
            if reduce is not None and reduce.world > 1:
                counts = reduce.gather(torch.tensor([[sum(own)]], device=device))
                start = int(counts[0, : reduce.rank].sum())
            edges = [start + sum(own[:j]) for j in range(len(own) + 1)]
            found[key] = list(itertools.pairwise(edges))
        offsets.append(found)
    return offsets


def value_and_grad(
    objective: Any,
    image: Tensor,
    tiling_: Tiling,
    keep: Callable[[Tensor], Tensor],
    reduce: Reduce | None = None,
) -> dict[str, Tensor]:
    """The terms (K,) of ``image`` (the optimised parameter) and, added to ``image.grad``, the gradient of
    sum_k keep(total)_k total_k: the images ``keep`` drops (not finite, stopped) contribute nothing."""
    summaries, sizes = first_pass(objective, image, tiling_, reduce)
    leaves = [{k: v.detach().requires_grad_(v.is_floating_point()) for k, v in s.items()} for s in summaries]
    x = objective.generated(image)
    first = reduce is None or reduce.rank == 0
    extras = {name: module(x) if first else module(x).detach() for name, module in objective.extras.items()}
    terms = objective.terms(leaves, x, extras)
    total = terms["total"]
    torch.where(keep(total.detach()), total, torch.zeros_like(total)).sum().backward()
    slopes = [{k: v.grad for k, v in s.items() if v.grad is not None} for s in leaves]
    offsets = _gathered_offsets(sizes, image.device, reduce)
    for j, tile in enumerate(mine(tiling_, reduce)):
        own, regions = _own_features(objective, image, tile, tiling_)
        surrogate = _surrogate(_summaries(objective, own, regions), slopes, offsets, j)
        if surrogate is not None and surrogate.requires_grad:
            surrogate.backward()
        del own, surrogate  # before the next tile's features are made
    if reduce is not None and reduce.world > 1 and image.grad is not None:
        image.grad.copy_(reduce.sum(image.grad))
    return {key: value.detach() for key, value in terms.items()}


def _surrogate(tile_summaries: list[Summary], slopes: list[dict], offsets: list[dict], j: int) -> Tensor | None:
    """sum over terms and keys of <dL/dS, S(tile)>: its gradient is the tile's share of the exact gradient."""
    total = None
    for i, summary in enumerate(tile_summaries):
        for key, value in summary.items():
            slope = slopes[i].get(key)
            if slope is None or not value.requires_grad:
                continue
            if key in offsets[i]:
                start, end = offsets[i][key][j]
                slope = slope[:, start:end]
            part = (slope.to(value.dtype) * value).sum()
            total = part if total is None else total + part
    return total


class TiledNetwork(torch.nn.Module):
    """A network whose features of a large image are assembled from tiles (no gradient): the targets and the
    end-of-run measures of an image too large to run whole. The same features, exactly, in the memory of a tile
    (and of the feature maps asked for)."""

    def __init__(self, network: Any, tile: int) -> None:
        super().__init__()
        self.network, self.tile = network, tile
        self.layer_names = network.layer_names

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.network, name)

    @torch.no_grad()
    def forward(self, image: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        layers = list(self.network.layer_names if layers is None else layers)
        if max(image.shape[-2:]) <= self.tile:
            return self.network(image, layers)
        grid, halo = grid_and_halo(self.network, layers)
        plan = tiling(image.shape[-2], image.shape[-1], self.tile, grid, halo)
        out: dict[str, Tensor] = {}
        for tile in plan.tiles:
            features = self.network(_crop(image, tile.crop), layers)
            for layer, f in features.items():
                stride = self.network.stride(layer)
                shape = (image.shape[-2] // stride, image.shape[-1] // stride)
                if layer not in out:
                    out[layer] = f.new_empty(*f.shape[:2], *shape)
                rows, cols, (r0, c0, _, _) = layer_slices(tile, plan, stride, shape, 0)
                own = f[..., rows, cols]
                out[layer][..., r0 : r0 + own.shape[-2], c0 : c0 + own.shape[-1]] = own
        return out
