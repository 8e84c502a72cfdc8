"""A run's images: loaded, checked, resized, colour-processed; masks, temporal targets and starts.

Everything here is RGB in [0, 1], (1, 3, H, W) unless said otherwise; the generated image takes the content's
shape. Nothing here knows the network or the losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nst_lightning.inputs.images import load_image
from nst_lightning.model.color import color_stats, luminance, match_color, matched_luminance
from nst_lightning.util.errors import NSTError


@dataclass
class Prepared:
    """What the objective compares against, after the colour options, at one stage's size."""

    content: Tensor  # as optimised: grey when only the luminance is transferred
    styles: list[Tensor]  # each (1, 3, h, w), at the style size
    blend: list[float]
    chroma: Tensor | None = None  # the content in colour, when only the luminance is transferred
    mask: Tensor | None = None  # (1, 1, H, W) in [0, 1]: where the style goes
    temporal_target: Tensor | None = None
    color_target: tuple[Tensor, Tensor] | None = None  # RGB mean (1, 3) and covariance (1, 3, 3)


def _check_image_size(image: Tensor, what: str, minimum: int) -> None:
    h, w = image.shape[-2:]
    if min(h, w) < minimum:
        raise NSTError(
            f"{what} is {w}x{h} px after resizing, too small for the deepest layer in use: "
            f"its short side must be >= {minimum} px (raise size/style_size or use shallower layers)"
        )


def resized_to(image: Tensor, like: Tensor) -> Tensor:
    """``image`` at the height and width of ``like`` (bilinear, antialiased), in [0, 1]."""
    if image.shape[-2:] == like.shape[-2:]:
        return image
    return F.interpolate(image, size=like.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1)


def load_images(
    content: str, styles: list[str], size: int, style_side: int, min_side: int
) -> tuple[Tensor, list[Tensor]]:
    """(content, styles) at a stage's long side (the styles at ``style_side``)."""
    image = load_image(content, size, "content image")
    _check_image_size(image, "the content image", min_side)
    loaded = []
    for path in styles:
        style = load_image(path, style_side, "style image")
        _check_image_size(style, f"the style image {path}", min_side)
        loaded.append(style)
    return image, loaded


def _mixture_color_stats(images: list[Tensor], blend: list[float]) -> tuple[Tensor, Tensor]:
    """RGB mean and covariance of the blend of several images' pixels (a mixture: sum b_i of second moments)."""
    stats = [color_stats(image) for image in images]
    mean = sum(b * m for b, (m, _) in zip(blend, stats, strict=True))
    second = sum(b * (c + m[..., None] * m[:, None]) for b, (m, c) in zip(blend, stats, strict=True))
    return mean, second - mean[..., None] * mean[:, None]


def prepare(
    content: str,
    styles: list[str],
    blend: list[float],
    size: int,
    style_side: int,
    min_side: int = 1,
    preserve_color: str = "none",
    color_target: str | None = None,
    content_mask: str | None = None,
    temporal_target: str | None = None,
) -> Prepared:
    """A stage's images with the colour options applied: ``preserve_color`` histogram (recolour the styles) or
    luminance (transfer on Y); ``color_target`` content or style (the colour loss's statistics), None: no colour
    loss; a ``content_mask``; a video frame's ``temporal_target``."""
    image, loaded = load_images(content, styles, size, style_side, min_side)
    chroma = None
    if preserve_color == "histogram":  # recolour the styles to the content's colour statistics
        loaded = [match_color(style, image) for style in loaded]
    elif preserve_color == "luminance":  # luminance only; the content's chroma comes back at the end
        chroma = image
        loaded = [matched_luminance(style, image) for style in loaded]
        image = luminance(image)
    out = Prepared(image, loaded, blend, chroma=chroma)
    if color_target is not None:
        out.color_target = color_stats(image) if color_target == "content" else _mixture_color_stats(loaded, blend)
    side = max(image.shape[-2:])  # decode large files at the size they are used at, not in full
    if content_mask:
        mask = resized_to(load_image(content_mask, side, "content_mask"), image).mean(1, keepdim=True)
        if mask.max() < 0.5:
            raise NSTError(f"content_mask={content_mask} has no white area: the style would go nowhere")
        out.mask = mask
    if temporal_target:
        out.temporal_target = resized_to(load_image(temporal_target, side, "temporal_target"), image)
    return out


def noise_start(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> Tensor:
    """Mid-grey plus uniform noise of amplitude ``scale``: 0.5 + scale (u - 0.5), u ~ U[0, 1) from ``seed``.
    scale=1 is the paper's white noise in [0, 1]."""
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    return 0.5 + scale * (u - 0.5)


def initial_image(kind: str, seed: int, scale: float, path: str | None, prepared: Prepared) -> Tensor:
    """One image's start (1, 3, H, W): noise (``scale``, ``seed``), the content, the (first) style or the image at
    ``path``."""
    content = prepared.content
    if kind == "noise":
        return noise_start(tuple(content.shape), seed, scale)
    if kind == "content":
        return content.clone()
    side = max(content.shape[-2:])
    start = prepared.styles[0] if kind == "style" else load_image(str(path), side, "init image")
    return resized_to(start, content)
