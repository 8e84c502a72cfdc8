"""Built-in images: the shipped photograph, the generated painting, and verified painting downloads (no internet)."""

import socket

import numpy as np
import pytest

from nst_lightning.inputs.builtin import (
    BUILTIN_CONTENT,
    BUILTIN_STYLE,
    PAINTINGS,
    brushstrokes,
    builtin_names,
    cache_dir,
    fetch_painting,
    open_builtin,
)
from nst_lightning.util.errors import NSTError

# ------------------------------------------------------------------------------------------------------------------
# Offline images
# ------------------------------------------------------------------------------------------------------------------


def test_builtin_names_lists_offline_images_first_then_paintings():
    names = builtin_names()
    assert names[:2] == [BUILTIN_CONTENT, BUILTIN_STYLE] == ["grace_hopper", "brushstrokes"]
    assert set(names[2:]) == set(PAINTINGS) >= {"starry_night", "tubingen", "the_scream", "seated-nude"}
    assert len(names) == len(set(names))


def test_grace_hopper_opens_as_rgb_photograph():
    img = open_builtin("grace_hopper")
    assert img.mode == "RGB"
    assert 256 <= min(img.size) and max(img.size) <= 2048
    assert np.asarray(img).std() > 20  # a real photograph, not a blank placeholder


def test_brushstrokes_is_deterministic_per_seed_and_has_requested_size():
    a, b, c = brushstrokes(128, seed=3), brushstrokes(128, seed=3), brushstrokes(128, seed=4)
    assert a.mode == "RGB" and a.size == (128, 128)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert brushstrokes(200, seed=3).size == (200, 200)


def test_brushstrokes_looks_like_a_colourful_painting_not_noise():
    pixels = np.asarray(brushstrokes(256, seed=1)).astype(np.float64)
    flat = pixels.reshape(-1, 3)
    distinct = len(np.unique(flat.astype(np.uint8), axis=0))
    assert distinct > 5000  # shaded strokes, not a few flat fills
    assert (pixels.std(axis=(0, 1)) > 40).all()  # every channel varies strongly
    assert (flat.max(1) - flat.min(1)).mean() > 60  # saturated colours, not greys
    blue = (flat[:, 2] > flat[:, 0] + 40).mean()
    warm = (flat[:, 0] > flat[:, 2] + 60).mean()
    assert blue > 0.25 and warm > 0.1  # a palette of blues with yellow/orange accents

    # Strong local structure: stroke edges give large gradients ...
    assert np.abs(np.diff(pixels, axis=1)).mean() > 5
    # ... yet neighbours are highly correlated (uniform noise would give ~0) ...
    left, right = pixels[:, :-1].ravel(), pixels[:, 1:].ravel()
    assert np.corrcoef(left, right)[0, 1] > 0.8
    # ... and colours form coherent regions: 32 px block means still differ a lot.
    blocks = pixels.reshape(8, 32, 8, 32, 3).mean(axis=(1, 3))
    assert (blocks.std(axis=(0, 1)) > 30).all()


def test_brushstrokes_rejects_a_tiny_size():
    with pytest.raises(NSTError, match="at least 16"):
        brushstrokes(4)


def test_open_builtin_brushstrokes_is_the_default_painting_and_a_fresh_copy():
    img = open_builtin("brushstrokes")
    assert img.size == (512, 512) and img.mode == "RGB"
    assert img.tobytes() == brushstrokes(512, 0).tobytes()
    img.paste((0, 0, 0), (0, 0, 512, 512))  # editing the returned image must not touch the cached one
    assert open_builtin("brushstrokes").tobytes() != img.tobytes()


def test_default_painting_is_kept_on_disk_and_read_back_not_repainted(monkeypatch, tmp_path):
    import nst_lightning.inputs.builtin as builtin

    monkeypatch.setenv("NST_LIGHTNING_CACHE", str(tmp_path))
    builtin._default_brushstrokes.cache_clear()
    painted = open_builtin("brushstrokes")
    (kept,) = (tmp_path / "builtin").glob("brushstrokes-512-0-*.png")

    def no_painting(*args, **kwargs):
        raise AssertionError("painted again although the cache holds the painting")

    monkeypatch.setattr(builtin, "brushstrokes", no_painting)
    builtin._default_brushstrokes.cache_clear()
    assert open_builtin("brushstrokes").tobytes() == painted.tobytes()  # PNG: the very same pixels

    kept.write_bytes(kept.read_bytes()[:100])  # a truncated file is painted again and replaced
    monkeypatch.setattr(builtin, "brushstrokes", brushstrokes)
    builtin._default_brushstrokes.cache_clear()
    assert open_builtin("brushstrokes").tobytes() == painted.tobytes()
    assert kept.stat().st_size > 100_000
    builtin._default_brushstrokes.cache_clear()  # later tests get the default cache folder again


def test_unknown_name_is_one_line_nst_error_listing_valid_names():
    with pytest.raises(NSTError) as info:
        open_builtin("mona_lisa")
    message = str(info.value)
    assert "mona_lisa" in message and "\n" not in message
    for name in builtin_names():
        assert name in message


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NST_LIGHTNING_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NST_LIGHTNING_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "nst_lightning")


# ------------------------------------------------------------------------------------------------------------------
# Downloads, against a local HTTP server (conftest.py); the https and sha256 checks are in test_security.py
# ------------------------------------------------------------------------------------------------------------------


def test_fetch_downloads_once_then_uses_the_cache(served_painting, tmp_path):
    base_url, data, requests = served_painting
    cache = tmp_path / "cache"
    path = fetch_painting("starry_night", cache_dir=cache, base_url=base_url)
    assert path == cache / "paintings" / "starry_night.jpg"
    assert path.read_bytes() == data
    assert requests == ["/starry_night.jpg"]
    assert fetch_painting("starry_night", cache_dir=cache, base_url=base_url) == path
    assert len(requests) == 1  # second call: verified from disk, no request
    assert [p.name for p in path.parent.iterdir()] == ["starry_night.jpg"]  # no temp files left behind


def test_open_builtin_painting_via_environment_override(served_painting, tmp_path, monkeypatch):
    base_url, _, requests = served_painting
    monkeypatch.setenv("NST_LIGHTNING_PAINTINGS_URL", base_url)
    monkeypatch.setenv("NST_LIGHTNING_CACHE", str(tmp_path / "envcache"))
    img = open_builtin("starry_night")
    assert img.mode == "RGB" and img.size == (32, 32)
    assert (tmp_path / "envcache" / "paintings" / "starry_night.jpg").is_file()
    assert len(requests) == 1


def test_fetch_missing_file_on_server_is_nst_error(server, tmp_path):
    base_url, _, _ = server
    with pytest.raises(NSTError, match="HTTP 404"):
        fetch_painting("the_scream", cache_dir=tmp_path, base_url=base_url)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_fetch_unreachable_server_says_offline(tmp_path):
    with socket.socket() as sock:  # grab a free port, then close it: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NSTError) as info:
        fetch_painting("starry_night", cache_dir=tmp_path, base_url=f"http://127.0.0.1:{port}", timeout=5)
    message = str(info.value)
    assert "offline" in message and "starry_night" in message and "\n" not in message
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_fetch_unknown_painting_lists_names(tmp_path):
    with pytest.raises(NSTError, match="starry_night"):
        fetch_painting("grace_hopper", cache_dir=tmp_path)
