"""Shared fixtures: synthetic images (no third-party picture is needed) and composed configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from nst_lightning.config import conf_dir, register_configs

register_configs()


def make_photo(path: Path, width: int = 48, height: int = 40, seed: int = 0) -> Path:
    """A 'photograph': smooth sky gradient, a bright disc and a dark block, slightly noisy."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    img = np.stack([0.3 + 0.5 * y, 0.5 + 0.3 * x, 0.9 - 0.4 * y], -1)
    img[(x - 0.6) ** 2 + (y - 0.3) ** 2 < 0.03] = (1.0, 0.9, 0.3)
    img[(x > 0.1) & (x < 0.35) & (y > 0.5)] = (0.15, 0.2, 0.1)
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def make_painting(path: Path, size: int = 48, seed: int = 1) -> Path:
    """A 'painting': bold diagonal stripes in two strong colours with a swirl."""
    y, x = np.mgrid[0:size, 0:size] / size
    phase = np.sin(2 * math.pi * (4 * (x + y) + 0.5 * np.sin(6 * x)))
    img = np.where(phase[..., None] > 0, (0.1, 0.2, 0.8), (1.0, 0.8, 0.1))
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    return {"content": make_photo(tmp_path / "photo.png"), "style": make_painting(tmp_path / "painting.png")}


@pytest.fixture
def make_cfg(images):
    """Compose the real conf/ with overrides, on tiny synthetic images by default."""

    def _make(*overrides: str):
        base = [f"content={images['content']}", f"style={images['style']}", "size=32", "steps=3"]
        base += ["snapshot_every=0", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            return compose("config", overrides=base + list(overrides))

    return _make
