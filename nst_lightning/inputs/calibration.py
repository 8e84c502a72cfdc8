"""The calibration set of the normalised VGG19: a photograph, generated paintings and procedural pictures, all
offline and deterministic (nst_lightning.model.weights reads the means measured on it)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

CALIBRATION_SIZE = 224  # ImageNet's input size, the scale the filters were trained at
CALIBRATION_SEEDS = tuple(range(12))  # procedural images 0 ... 11
BRUSHSTROKES_SEEDS = (0, 1, 2)  # brushstrokes(CALIBRATION_SIZE, seed)
HELD_APART_SEED = 1000  # a procedural image not in the calibration set (tests, the report)


def procedural_image(seed: int, size: int = CALIBRATION_SIZE) -> Tensor:
    """A synthetic 'natural' picture (1, 3, size, size) in [0, 1], the same pixels for a seed.

    Coloured 1/f noise (natural images have amplitude spectra close to 1/f) under a few opaque shapes (ellipses,
    rectangles, triangles), each with its own colour and its own 1/f texture: smooth regions, textures and edges.
    """
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    freq = np.sqrt(fx * fx + fy * fy)
    freq[0, 0] = 1.0

    def pink(channels: int) -> np.ndarray:  # (size, size, channels), zero mean, unit deviation
        out = []
        for _ in range(channels):
            slope = rng.uniform(0.8, 1.5)
            spectrum = (rng.normal(size=freq.shape) + 1j * rng.normal(size=freq.shape)) / freq**slope
            spectrum[0, 0] = 0
            field = np.fft.irfft2(spectrum, s=(size, size))
            out.append((field - field.mean()) / field.std())
        return np.stack(out, -1)

    def coloured(contrast: float) -> np.ndarray:  # mostly luminance, weaker colour variation, as in photographs
        mix = np.concatenate([np.ones((3, 1)), 0.35 * rng.normal(size=(3, 2))], 1) * contrast
        return rng.uniform(0.2, 0.8) + rng.normal(0, 0.1, 3) + pink(3) @ mix.T

    from PIL import Image, ImageDraw

    image = coloured(0.12)
    for _ in range(int(rng.integers(3, 10))):
        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.05, 0.35, 2) * size
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        elif kind == 1:
            draw.rectangle((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        else:
            draw.polygon([tuple(p) for p in rng.uniform(0, size, (3, 2))], fill=255)
        inside = np.asarray(mask, dtype=np.float64)[..., None] / 255.0
        image = inside * coloured(rng.uniform(0.02, 0.2)) + (1 - inside) * image
    pixels = torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32))
    return pixels.permute(2, 0, 1).unsqueeze(0).contiguous()


def calibration_images(size: int = CALIBRATION_SIZE) -> tuple[list[str], Tensor]:
    """The fixed calibration set of the normalisation, (names, batch (16, 3, size, size) in [0, 1]).

    The built-in photograph ``grace_hopper`` (short side resized to ``size``, centre crop), the built-in painting
    generator ``brushstrokes(size, seed)`` for ``BRUSHSTROKES_SEEDS`` and ``procedural_image(seed, size)`` for
    ``CALIBRATION_SEEDS``: offline, deterministic, ours to ship.
    """
    from PIL import Image

    from nst_lightning.inputs.builtin import brushstrokes, open_builtin

    photo = open_builtin("grace_hopper")
    scale = size / min(photo.size)
    w, h = round(photo.width * scale), round(photo.height * scale)
    photo = photo.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    pictures = [photo.crop((left, top, left + size, top + size))]
    pictures += [brushstrokes(size, seed) for seed in BRUSHSTROKES_SEEDS]
    batch = [torch.from_numpy(np.asarray(p, dtype=np.float32) / 255.0).permute(2, 0, 1) for p in pictures]
    batch += [procedural_image(seed, size)[0] for seed in CALIBRATION_SEEDS]
    names = ["grace_hopper"] + [f"brushstrokes_{s}" for s in BRUSHSTROKES_SEEDS]
    names += [f"procedural_{s}" for s in CALIBRATION_SEEDS]
    return names, torch.stack(batch)
