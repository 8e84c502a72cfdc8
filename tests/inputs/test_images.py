"""Image I/O: decoding, resizing, PNG encoding, white noise, built-in names.

Bad input (unreadable files, odd modes, EXIF, animations, huge and tiny images) is in test_bad_input.py, atomic
writes in test_faults.py. Every image here is built with PIL/numpy into tmp_path; no third-party picture is used.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_batch, rgb_array, save_rgb
from PIL import Image

from nst_lightning.inputs import images
from nst_lightning.inputs.images import load_image, open_image, resize_long_side, save_png, white_noise

# ------------------------------------------------------------------------------------------------------------------
# Plain RGB and resizing
# ------------------------------------------------------------------------------------------------------------------


def test_rgb_png_loads_exact_pixels(tmp_path):
    array = rgb_array(7, 5)
    path = save_rgb(tmp_path / "rgb.png", array)
    tensor = load_image(str(path))
    assert_batch(tensor, 5, 7)
    expected = torch.from_numpy(array).permute(2, 0, 1).float().div(255.0)
    assert torch.equal(tensor[0], expected)
    assert tensor.is_contiguous()


def test_open_image_returns_whole_rgb_image(tmp_path):
    path = save_rgb(tmp_path / "rgb.png", rgb_array(33, 21))
    img = open_image(str(path))
    assert img.mode == "RGB"
    assert img.size == (33, 21)


@pytest.mark.parametrize(
    ("width", "height", "long_side"),
    [(101, 37, 50), (37, 101, 50), (60, 40, 30), (40, 60, 30), (50, 17, 128), (17, 50, 128), (300, 1, 64)],
)
def test_load_image_resizes_long_side(tmp_path, width, height, long_side):
    path = save_rgb(tmp_path / "img.png", rgb_array(width, height))
    tensor = load_image(str(path), long_side)
    _, _, h, w = tensor.shape
    assert max(h, w) == long_side
    if width >= height:
        assert w == long_side
        assert abs(h - height * long_side / width) <= 1
    else:
        assert h == long_side
        assert abs(w - width * long_side / height) <= 1
    assert min(h, w) >= 1
    assert_batch(tensor, h, w)


def test_resize_long_side_keeps_same_size_image_untouched():
    img = Image.fromarray(rgb_array(20, 10))
    assert resize_long_side(img, 20) is img
    assert resize_long_side(img, 10).size == (10, 5)
    assert resize_long_side(img, 40).size == (40, 20)


def test_resize_of_flat_colour_keeps_the_colour():
    img = Image.new("RGB", (90, 30), (10, 128, 250))
    out = np.asarray(resize_long_side(img, 45))
    assert out.shape == (15, 45, 3)
    assert (out == (10, 128, 250)).all()


def test_load_image_expands_user_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    save_rgb(tmp_path / "home.png", rgb_array(4, 3))
    assert load_image("~/home.png").shape == (1, 3, 3, 4)


# ------------------------------------------------------------------------------------------------------------------
# PNG save
# ------------------------------------------------------------------------------------------------------------------


def test_save_png_overwrites_and_accepts_chw(tmp_path):
    path = tmp_path / "result.png"
    save_png(torch.zeros(1, 3, 4, 4), path)
    save_png(torch.ones(3, 5, 6), str(path))
    loaded = load_image(str(path))
    assert loaded.shape == (1, 3, 5, 6)
    assert (loaded == 1.0).all()
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


def test_save_png_clamps_out_of_range_values(tmp_path):
    image = torch.tensor([[-0.5, 1.5], [-1e9, 1e9]]).expand(3, 2, 2).unsqueeze(0)
    path = save_png(image, tmp_path / "clamped.png")
    pixels = np.asarray(Image.open(path))
    assert pixels.dtype == np.uint8
    assert pixels[..., 0].tolist() == [[0, 255], [0, 255]]
    assert (pixels[..., 0] == pixels[..., 1]).all()
    assert (pixels[..., 0] == pixels[..., 2]).all()


# ------------------------------------------------------------------------------------------------------------------
# White noise
# ------------------------------------------------------------------------------------------------------------------


def test_white_noise_reproducible_and_seed_dependent():
    a = white_noise((1, 3, 32, 32), seed=1)
    b = white_noise((1, 3, 32, 32), seed=1)
    c = white_noise((1, 3, 32, 32), seed=2)
    assert a.shape == (1, 3, 32, 32)
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a - c).abs().mean() > 0.2  # independent uniforms differ by 1/3 on average


def test_white_noise_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    white_noise((1, 3, 8, 8), seed=5)
    assert torch.equal(torch.rand(4), expected)


def test_white_noise_is_uniform_on_unit_interval():
    noise = white_noise((1, 3, 64, 64), seed=0)
    assert float(noise.min()) >= 0.0
    assert float(noise.max()) < 1.0
    assert abs(float(noise.mean()) - 0.5) < 0.02
    assert abs(float(noise.std()) - (1 / 12) ** 0.5) < 0.01
    counts = torch.histc(noise, bins=10, min=0.0, max=1.0) / noise.numel()
    assert (counts - 0.1).abs().max() < 0.015
    for channel in range(3):
        assert abs(float(noise[0, channel].mean()) - 0.5) < 0.03


# ------------------------------------------------------------------------------------------------------------------
# Built-in names
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["grace_hopper", "brushstrokes"])
def test_builtin_names_resolve_to_rgb(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # no local file of that name
    img = open_image(name)
    assert img.mode == "RGB"
    assert min(img.size) >= 64
    tensor = load_image(name, 40)
    assert max(tensor.shape[2:]) == 40
    assert_batch(tensor, *tensor.shape[2:])
    assert float(tensor.std()) > 0.05  # a picture, not a flat fill


def test_local_file_shadows_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (7, 3), (1, 2, 3)).save(tmp_path / "brushstrokes", format="PNG")
    img = open_image("brushstrokes")
    assert img.size == (7, 3)
    assert img.getpixel((0, 0)) == (1, 2, 3)
    tensor = load_image("brushstrokes")
    assert tensor.shape == (1, 3, 3, 7)
    assert torch.allclose(tensor[0, :, 0, 0], torch.tensor([1.0, 2.0, 3.0]) / 255)


def test_pil_to_batch_and_tensor_to_pil_are_inverse():
    img = Image.new("RGB", (2, 1), (255, 0, 0))
    batch = images.pil_to_batch(img)
    assert batch.tolist() == [[[[1.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]]
    assert images.tensor_to_pil(batch).tobytes() == img.tobytes()
