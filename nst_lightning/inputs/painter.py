"""The generated painting ``brushstrokes``: a painterly style image, deterministic for a (size, seed).

Brush strokes along a swirling flow field over a palette underpainting, so that a first run needs no style file.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nst_lightning.util.errors import NSTError

# A Van Gogh-like palette, ordered so that neighbours in the list are neighbours on the canvas:
# a low-frequency field walks along it, giving coherent regions with plausible transitions.
_PALETTE = np.array(
    [
        (14, 22, 58),  # night blue
        (27, 48, 125),  # ultramarine
        (38, 82, 170),  # cobalt
        (78, 132, 200),  # cerulean
        (156, 190, 215),  # pale blue
        (238, 232, 205),  # warm white
        (244, 206, 66),  # chrome yellow
        (214, 150, 40),  # ochre
        (226, 104, 28),  # orange
    ],
    dtype=np.float64,
)
# How much of the canvas each colour gets: mostly blues, with bold warm accents.
_PALETTE_SHARE = np.array([0.14, 0.18, 0.16, 0.11, 0.06, 0.05, 0.13, 0.09, 0.08])
_OUTLINE = np.array((12, 16, 30), dtype=np.float64)

# (u, v) in the unit square -> palette index
ColourIndex = Callable[[np.ndarray, np.ndarray], np.ndarray]


class _Field:
    """A smooth random scalar field on the unit square: a sum of a few low-frequency plane waves."""

    def __init__(self, rng: np.random.Generator, waves: int, max_cycles: float) -> None:
        angle = rng.uniform(0, 2 * np.pi, waves)
        cycles = rng.uniform(0.6, max_cycles, waves)
        self.kx = 2 * np.pi * cycles * np.cos(angle)
        self.ky = 2 * np.pi * cycles * np.sin(angle)
        self.phase = rng.uniform(0, 2 * np.pi, waves)
        self.amp = rng.uniform(0.5, 1.0, waves) / np.sqrt(waves)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        waves = np.sin(u[..., None] * self.kx + v[..., None] * self.ky + self.phase)
        return waves @ self.amp


class _Flow:
    """Unit direction field: a wavy base flow plus a few vortices, for the swirling look of a night sky."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.angle = _Field(rng, waves=4, max_cycles=1.6)
        self.base_turn = rng.uniform(0, 2 * np.pi)
        n = int(rng.integers(3, 6))
        self.centres = rng.uniform(0.1, 0.9, (n, 2))
        self.radii = rng.uniform(0.08, 0.2, n)
        self.spin = rng.choice([-1.0, 1.0], n) * rng.uniform(2.0, 3.5, n)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = self.base_turn + 2.2 * self.angle(u, v)
        dx, dy = np.cos(theta), np.sin(theta)
        for (cu, cv), r, spin in zip(self.centres, self.radii, self.spin, strict=True):
            ru, rv = u - cu, v - cv
            dist = np.sqrt(ru * ru + rv * rv) + 1e-6
            pull = spin * np.exp(-((dist / r) ** 2))
            dx = dx - pull * rv / dist  # tangential: strokes circle around the centre
            dy = dy + pull * ru / dist
        norm = np.sqrt(dx * dx + dy * dy) + 1e-9
        return dx / norm, dy / norm


def brushstrokes(size: int = 512, seed: int = 0) -> Image.Image:
    """Paint a square ``size`` x ``size`` RGB image of bold, swirling brush strokes (same seed, same pixels)."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 16:
        raise NSTError(f"brushstrokes size must be an integer of at least 16 pixels, got {size!r}")
    size = int(size)
    rng = np.random.default_rng(seed)
    flow = _Flow(rng)
    colour_field = _Field(rng, waves=5, max_cycles=2.2)
    colour_of = _palette_lookup(colour_field)

    canvas = _underpainting(size, colour_of)
    draw = ImageDraw.Draw(canvas)
    scale = size / 512
    # Layers from large to small: broad strokes block in the regions, small ones add texture on top.
    for count, width, step in ((600, 14.0, 5.0), (1500, 9.0, 3.5), (3200, 5.0, 2.5)):
        _paint_layer(draw, rng, flow, colour_of, size, count, max(2.0, width * scale), max(1.0, step * scale))
    # A touch of smoothing merges the hard polygon edges into something closer to paint.
    return canvas.filter(ImageFilter.SMOOTH)


def _palette_lookup(field: _Field) -> ColourIndex:
    """Map field values to palette colours so each colour covers its share of the canvas."""
    grid = np.linspace(0, 1, 96)
    cuts = np.quantile(field(*np.meshgrid(grid, grid)), np.cumsum(_PALETTE_SHARE)[:-1])

    def colour_index(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.searchsorted(cuts, field(u, v))

    return colour_index


def _underpainting(size: int, colour_of: ColourIndex) -> Image.Image:
    """A soft, low-resolution wash of the palette regions, so no bare canvas shows between strokes."""
    n = 48
    grid = (np.arange(n) + 0.5) / n
    u, v = np.meshgrid(grid, grid)
    small = _PALETTE[colour_of(u, v)] * 0.8  # darker than the strokes: gaps read as shadow
    img = Image.fromarray(small.astype(np.uint8), mode="RGB").resize((size, size), Image.Resampling.BICUBIC)
    return img.filter(ImageFilter.GaussianBlur(radius=size / 64))


def _paint_layer(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    flow: _Flow,
    colour_of: ColourIndex,
    size: int,
    count: int,
    width: float,
    step: float,
) -> None:
    """Draw ``count`` strokes, each a tapered streamline of the flow with 15-40 segments."""
    max_segments = 40
    margin = 0.05 * size  # start a little outside so strokes also run in from the edges
    pos = rng.uniform(-margin, size + margin, (count, 2))
    # Trace every stroke at once: one vectorised flow evaluation per segment.
    path = np.empty((max_segments + 1, count, 2))
    normal = np.empty_like(path)
    for i in range(max_segments + 1):
        dx, dy = flow(pos[:, 0] / size, pos[:, 1] / size)
        path[i] = pos
        normal[i, :, 0], normal[i, :, 1] = -dy, dx
        pos = pos + step * np.stack([dx, dy], axis=1)

    segments = rng.integers(15, max_segments + 1, count)
    widths = width * rng.uniform(0.75, 1.25, count)
    mid = path[max_segments // 2]
    index = colour_of(mid[:, 0] / size, mid[:, 1] / size)
    # Occasionally step to a neighbouring colour, so regions are coherent but not flat.
    index = np.clip(index + rng.choice([-1, 0, 0, 0, 0, 1], count), 0, len(_PALETTE) - 1)
    base = _PALETTE[index] * rng.uniform(0.85, 1.12, (count, 1)) + rng.normal(0, 8, (count, 3))
    outline = rng.random(count) < 0.04  # a few dark contour strokes, as in Van Gogh's drawing-like marks
    base[outline] = _OUTLINE
    widths[outline] *= 0.6

    # A brush loads in, presses and lifts off: the half-width swells from a narrow tip to full and back.
    t = np.minimum(np.arange(max_segments + 1)[:, None] / segments[None, :], 1.0)
    half = 0.5 * widths * (0.3 + 0.7 * np.sqrt(np.sin(np.pi * t)))
    left = path + normal * half[..., None]
    right = path - normal * half[..., None]
    shift = max(1.0, 0.2 * width)

    shadow = [tuple(c) for c in np.clip(base * 0.55, 0, 255).astype(int)]
    paint = [tuple(c) for c in np.clip(base, 0, 255).astype(int)]
    ridge = [tuple(c) for c in np.clip(base * 1.2 + 20, 0, 255).astype(int)]
    for k in range(count):
        n = segments[k] + 1
        outline_k = np.concatenate([left[:n, k], right[n - 1 :: -1, k]])
        # Shadow offset down-right, then the paint, then a thin lit ridge up-left: reads as thick impasto.
        draw.polygon((outline_k + shift).ravel().tolist(), fill=shadow[k])
        draw.polygon(outline_k.ravel().tolist(), fill=paint[k])
        if widths[k] >= 4 and not outline[k]:
            ridge_line = path[1 : n - 1, k] - 0.3 * half[1 : n - 1, k, None]
            draw.line(ridge_line.ravel().tolist(), fill=ridge[k], width=max(1, round(widths[k] / 5)))
