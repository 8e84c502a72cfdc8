"""Bad input for every image the user names (content, style, init=image): one clear line, before heavy work."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from nst_lightning.errors import NSTError
from nst_lightning.run import load_images


def _truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


BAD_FILES = {
    "missing": (lambda p: None, "not found"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "empty": (lambda p: p.write_bytes(b""), "not an image"),
    "text": (lambda p: p.write_text("hello, I am not a JPEG"), "not an image"),
    "truncated": (_truncated_jpeg, "truncated"),
}


@pytest.mark.parametrize("role", ["content", "style", "init"])
@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_image_files(make_cfg, tmp_path, role, kind):
    make, message = BAD_FILES[kind]
    bad = tmp_path / f"bad_{kind}.jpg"
    make(bad)
    overrides = ["init=image", f"init.path={bad}"] if role == "init" else [f"{role}={bad}"]
    with pytest.raises(NSTError, match=message) as info:
        load_images(make_cfg(*overrides))
    text = str(info.value)
    assert "\n" not in text and str(bad) in text
    assert {"content": "content image", "style": "style image", "init": "init image"}[role] in text


@pytest.mark.parametrize("role", ["content", "style"])
def test_image_too_small_for_the_deepest_layer(make_cfg, tmp_path, role):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (200, 10), (90, 90, 90)).save(strip)
    with pytest.raises(NSTError, match=r"short side must be >= 16 px") as info:
        load_images(make_cfg(f"{role}={strip}", "size=64"))
    assert f"the {role} image is 64x3 px" in str(info.value)
    # with shallow layers only, the same image is fine
    content, style, _ = load_images(
        make_cfg(f"{role}={strip}", "size=64", "content_layer=conv1_1", "style_layers=[conv1_1]")
    )
    assert min((content if role == "content" else style).shape[-2:]) == 3


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_odd_modes_are_converted_for_every_role(make_cfg, tmp_path, mode):
    path = tmp_path / f"odd_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    Image.new(mode, (40, 40)).save(path)
    for overrides in ([f"content={path}"], [f"style={path}"], ["init=image", f"init.path={path}"]):
        content, style, init = load_images(make_cfg(*overrides))
        assert content.shape[1] == style.shape[1] == init.shape[1] == 3
        assert init.shape == content.shape
