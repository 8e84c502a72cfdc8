"""Image I/O: every odd mode converted, EXIF orientation applied, one-line errors, atomic PNG save, noise.

Every image here is built with PIL/numpy into tmp_path; no third-party picture is used.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nst_lightning import images
from nst_lightning.builtin_images import builtin_names
from nst_lightning.errors import NSTError
from nst_lightning.images import load_image, open_image, resize_long_side, save_png, white_noise

# ------------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------------


def rgb_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_rgb(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array, mode="RGB").save(path)
    return path


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(width: int = 16, height: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb_array(width, height, seed=3), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def assert_batch(tensor: torch.Tensor, height: int, width: int) -> None:
    assert tensor.shape == (1, 3, height, width)
    assert tensor.dtype == torch.float32
    assert float(tensor.min()) >= 0.0
    assert float(tensor.max()) <= 1.0


def assert_one_line_error(exc_info: pytest.ExceptionInfo, path: Path | str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


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
# Odd modes are converted, not refused
# ------------------------------------------------------------------------------------------------------------------


def test_grey_becomes_three_equal_channels(tmp_path):
    grey = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    tensor = load_image(str(path))
    assert_batch(tensor, 4, 6)
    expected = torch.from_numpy(grey).float() / 255.0
    for channel in range(3):
        assert torch.equal(tensor[0, channel], expected)


def test_palette_colours_preserved(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (12, 34, 56)]
    img = Image.new("P", (4, 2))
    img.putpalette([c for colour in colours for c in colour] + [0] * (768 - 3 * len(colours)))
    img.putdata([0, 1, 2, 3, 3, 2, 1, 0])
    path = tmp_path / "palette.png"
    img.save(path)
    assert Image.open(path).mode == "P"
    out = (load_image(str(path))[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert [tuple(int(v) for v in out[0, i]) for i in range(4)] == colours
    assert [tuple(int(v) for v in out[1, i]) for i in range(4)] == colours[::-1]


def test_palette_transparency_becomes_white(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1])
    path = tmp_path / "palette_transparent.png"
    img.save(path, transparency=1)  # palette index 1 (blue) is fully transparent
    out = (load_image(str(path))[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)


def test_rgba_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 10, 20, 255)  # opaque: keeps its colour
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black: white
    rgba[0, 2] = (10, 200, 30, 0)  # fully transparent colour: white
    rgba[1, 0] = (0, 0, 0, 128)  # half transparent black over white: mid grey
    rgba[1, 1] = (5, 6, 7, 255)
    rgba[1, 2] = (255, 255, 255, 0)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = (load_image(str(path))[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert tuple(out[0, 0]) == (200, 10, 20)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert tuple(out[0, 2]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[1, 0])
    assert tuple(out[1, 1]) == (5, 6, 7)
    assert tuple(out[1, 2]) == (255, 255, 255)


def test_grey_with_alpha_composited_on_white(tmp_path):
    la = np.array([[[50, 255], [50, 0], [0, 128]]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    assert Image.open(path).mode == "LA"
    out = (load_image(str(path))[0].permute(1, 2, 0) * 255).round().byte().numpy()
    assert tuple(out[0, 0]) == (50, 50, 50)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 2])


def test_cmyk_jpeg_converted(tmp_path):
    img = Image.new("CMYK", (16, 8), (0, 0, 0, 0))  # no ink: white
    img.paste((255, 0, 0, 0), (8, 0, 16, 8))  # full cyan: (0, 255, 255)
    path = tmp_path / "cmyk.jpg"
    img.save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    tensor = load_image(str(path))
    assert_batch(tensor, 8, 16)
    left = tensor[0, :, 4, 2] * 255
    right = tensor[0, :, 4, 13] * 255
    assert (left > 240).all()
    assert right[0] < 20
    assert (right[1:] > 235).all()


def test_16_bit_ramp_maps_monotonically_to_unit_range(tmp_path):
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(1, 64)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    tensor = load_image(str(path))
    assert_batch(tensor, 1, 64)
    row = tensor[0, 0, 0]
    assert torch.equal(tensor[0, 0], tensor[0, 1])
    assert torch.equal(tensor[0, 0], tensor[0, 2])
    assert float(row[0]) == 0.0
    assert float(row[-1]) == 1.0
    assert bool((row[1:] > row[:-1]).all()), "a 0..65535 ramp must stay strictly increasing, not clip"
    assert abs(float(row[32]) - 32 / 63) <= 1 / 255
    assert (row < 1.0).sum() == 63


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (32768, 128), (65535, 255), (4096, 16)])
def test_16_bit_flat_grey_keeps_its_brightness(tmp_path, value, expected):
    """A flat 16-bit grey is 16-bit grey: value / 65535, not stretched to white by its own maximum."""
    path = tmp_path / "flat16.png"
    Image.fromarray(np.full((3, 5), value, dtype=np.uint16)).save(path)
    out = (load_image(str(path)) * 255).round()
    assert out.shape == (1, 3, 3, 5)
    assert bool((out == expected).all()), f"16-bit {value} gave {out.unique().tolist()}, expected {expected}"


def test_one_bit_image_is_black_and_white(tmp_path):
    bits = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"
    tensor = load_image(str(path))
    assert_batch(tensor, 2, 3)
    expected = torch.from_numpy(bits).float()
    for channel in range(3):
        assert torch.equal(tensor[0, channel], expected)


# ------------------------------------------------------------------------------------------------------------------
# EXIF orientation and animations
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "marker_at"),
    [
        (6, "top_right"),  # stored image must turn 90 degrees clockwise: its top-left goes top-right
        (8, "bottom_left"),  # 90 degrees anticlockwise: its top-left goes bottom-left
    ],
)
def test_exif_orientation_applied(tmp_path, orientation, marker_at):
    stored = np.full((40, 64, 3), (30, 60, 200), dtype=np.uint8)  # 64 wide, 40 high, blue
    stored[:16, :16] = (250, 20, 20)  # red marker in the stored top-left corner
    img = Image.fromarray(stored, mode="RGB")
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated{orientation}.jpg"
    img.save(path, exif=exif, quality=95)
    assert Image.open(path).size == (64, 40)

    out = open_image(str(path))
    assert out.size == (40, 64)  # width and height swapped
    pixels = np.asarray(out).astype(int)
    corners = {"top_left": pixels[6, 6], "top_right": pixels[6, 33], "bottom_left": pixels[57, 6]}
    corners["bottom_right"] = pixels[57, 33]
    for name, colour in corners.items():
        expected = (250, 20, 20) if name == marker_at else (30, 60, 200)
        assert np.abs(colour - expected).max() < 25, f"{name}: {colour.tolist()} != {expected}"

    assert load_image(str(path)).shape == (1, 3, 64, 40)
    assert load_image(str(path), 32).shape == (1, 3, 32, 20)


def test_animated_gif_uses_first_frame_and_warns(tmp_path, caplog):
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    with caplog.at_level(logging.WARNING, logger="nst_lightning.images"):
        tensor = load_image(str(path), what="style")
    assert_batch(tensor, 6, 8)
    assert torch.equal(tensor[0, :, 3, 4], torch.tensor([1.0, 0.0, 0.0]))
    assert (tensor[0, 0] == 1.0).all()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "3 frames" in message
    assert "first" in message
    assert str(path) in message
    assert message.startswith("style ")


def test_single_frame_gif_does_not_warn(tmp_path, caplog):
    path = tmp_path / "still.gif"
    Image.new("RGB", (5, 5), (0, 255, 0)).save(path)
    with caplog.at_level(logging.WARNING, logger="nst_lightning.images"):
        tensor = load_image(str(path))
    assert torch.equal(tensor[0, :, 2, 2], torch.tensor([0.0, 1.0, 0.0]))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------------------------------------------------------
# Errors: one NSTError line naming the file
# ------------------------------------------------------------------------------------------------------------------


def test_missing_path_mentions_builtin_names(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(NSTError) as exc_info:
        open_image(str(path), "content")
    message = assert_one_line_error(exc_info, path)
    assert message.startswith("content ")
    assert "not found" in message
    for name in builtin_names():
        assert name in message


def test_unknown_name_without_path_is_not_found():
    with pytest.raises(NSTError) as exc_info:
        load_image("definitely_not_a_builtin_or_file_42")
    message = assert_one_line_error(exc_info, "definitely_not_a_builtin_or_file_42")
    assert "grace_hopper" in message
    assert "brushstrokes" in message


def test_directory_refused(tmp_path):
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(NSTError) as exc_info:
        load_image(str(folder))
    assert "is a directory" in assert_one_line_error(exc_info, folder)


def test_empty_file_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(NSTError) as exc_info:
        load_image(str(path))
    assert "not an image PIL can read" in assert_one_line_error(exc_info, path)


def test_text_file_named_jpg_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\nbut a shopping list\n")
    with pytest.raises(NSTError) as exc_info:
        load_image(str(path))
    assert "not an image PIL can read" in assert_one_line_error(exc_info, path)


@pytest.mark.parametrize(
    ("name", "make"), [("truncated.jpg", lambda: jpeg_bytes(128, 96)), ("truncated.png", lambda: png_bytes(64, 64))]
)
def test_truncated_file_refused(tmp_path, name, make):
    data = make()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NSTError) as exc_info:
        load_image(str(path))
    message = assert_one_line_error(exc_info, path)
    if name.endswith(".jpg"):
        assert "cannot be decoded" in message
        assert "truncated" in message


def test_random_bytes_refused(tmp_path):
    path = tmp_path / "random.png"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(NSTError) as exc_info:
        load_image(str(path))
    assert "not an image PIL can read" in assert_one_line_error(exc_info, path)


_PNG = png_bytes()
_JPEG = jpeg_bytes(24, 16)

_ARBITRARY_BYTES = st.one_of(
    st.binary(max_size=2048),
    # a real header followed by anything: reaches the decoders, not just the format sniffing
    st.tuples(st.sampled_from([_PNG, _JPEG]), st.integers(0, 200), st.binary(max_size=512)).map(
        lambda t: t[0][: t[1]] + t[2]
    ),
    # a real file with a few bytes changed and maybe cut short
    st.tuples(
        st.sampled_from([_PNG, _JPEG]),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
        st.integers(1, 10_000),
    ).map(lambda t: _mutate(*t)),
)


def _mutate(data: bytes, changes: list[tuple[int, int]], keep: int) -> bytes:
    buf = bytearray(data)
    for index, value in changes:
        buf[index % len(buf)] = value
    return bytes(buf[: max(1, keep % (len(buf) + 1))])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_ARBITRARY_BYTES, suffix=st.sampled_from([".png", ".jpg"]))
def test_any_bytes_give_a_tensor_or_an_nst_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        tensor = load_image(str(path))
    except NSTError as exc:
        message = str(exc)
        assert "\n" not in message
        assert str(path) in message
    else:
        assert tensor.dim() == 4
        assert tensor.shape[:2] == (1, 3)
        assert tensor.shape[2] >= 1
        assert tensor.shape[3] >= 1
        assert tensor.dtype == torch.float32
        assert float(tensor.min()) >= 0.0
        assert float(tensor.max()) <= 1.0


@pytest.mark.parametrize("limit", [100, 150])  # 400 pixels: over twice the limit (error), and over it (warning)
def test_decompression_bomb_refused(tmp_path, monkeypatch, limit):
    path = save_rgb(tmp_path / "bomb.png", rgb_array(20, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(NSTError) as exc_info:
        load_image(str(path))
    message = assert_one_line_error(exc_info, path)
    assert "too large" in message
    assert str(limit) in message


def test_image_under_pixel_limit_loads(tmp_path, monkeypatch):
    path = save_rgb(tmp_path / "small.png", rgb_array(20, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)
    assert load_image(str(path)).shape == (1, 3, 20, 20)


# ------------------------------------------------------------------------------------------------------------------
# Atomic PNG save
# ------------------------------------------------------------------------------------------------------------------


def test_save_png_round_trips_atomically(tmp_path):
    image = torch.rand((1, 3, 9, 13), generator=torch.Generator().manual_seed(0))
    out_dir = tmp_path / "out" / "nested"
    path = save_png(image, out_dir / "result.png")
    assert path == out_dir / "result.png"
    assert path.is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode == "RGB"
        assert img.size == (13, 9)
    loaded = load_image(str(path))
    assert (loaded - image).abs().max() <= 0.5 / 255 + 1e-6
    assert sorted(p.name for p in out_dir.iterdir()) == ["result.png"]
    assert not list(out_dir.glob(".result-*"))


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


def test_save_png_failure_leaves_no_temp_file(tmp_path):
    target = tmp_path / "result.png"
    with pytest.raises(Exception):  # noqa: B017 - the error type is the tensor library's; only the cleanup matters
        save_png(torch.zeros(1, 5, 4, 4), target)  # five channels cannot be an RGB picture
    assert list(tmp_path.iterdir()) == []


def test_save_png_failure_keeps_previous_file(tmp_path):
    target = save_png(torch.full((1, 3, 2, 2), 0.5), tmp_path / "result.png")
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017
        save_png(torch.zeros(1, 5, 4, 4), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.png"]


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


def test_broken_local_file_shadowing_builtin_is_an_error(tmp_path, monkeypatch):
    """An existing file wins even when unreadable: the user meant the file, so the built-in is not silently used."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grace_hopper").write_text("oops")
    with pytest.raises(NSTError) as exc_info:
        open_image("grace_hopper")
    assert "not an image PIL can read" in assert_one_line_error(exc_info, "grace_hopper")


def test_pil_to_batch_and_tensor_to_pil_are_inverse():
    img = Image.new("RGB", (2, 1), (255, 0, 0))
    batch = images.pil_to_batch(img)
    assert batch.tolist() == [[[[1.0, 1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]]
    assert images.tensor_to_pil(batch).tobytes() == img.tobytes()


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(path, quality=80)
    full = open_image(str(path))
    reduced = open_image(str(path), long_side=500)
    assert full.size == (4000, 3000)
    assert max(reduced.size) <= 1000  # draft: a power-of-2 reduction that keeps both sides >= 500
    tensor = load_image(str(path), 500)
    assert tensor.shape == (1, 3, 375, 500)
    assert torch.allclose(tensor[0, :, 100, 100], torch.tensor([200, 30, 30]) / 255, atol=0.04)
