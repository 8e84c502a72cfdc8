"""Built-in images, so a first run needs no files: a photograph, a generated painting, and famous paintings.

- ``grace_hopper``: the public-domain photograph that matplotlib ships as sample data (no download).
- ``brushstrokes``: a painterly style image this module paints itself, deterministic for a (size, seed).
- the names in ``PAINTINGS``: the classic neural-style example images, downloaded on first use from pinned
  URLs, checked against a pinned sha256 and kept in ``cache_dir()/paintings``. Nothing downloaded is executed.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import numbers
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from nst_lightning.errors import NSTError
from nst_lightning.files import atomic_write, file_sha256

log = logging.getLogger(__name__)

BUILTIN_CONTENT = "grace_hopper"
BUILTIN_STYLE = "brushstrokes"

DEFAULT_PAINTINGS_URL = "https://raw.githubusercontent.com/jcjohnson/neural-style/master/examples/inputs"
PAINTINGS_URL_ENV = "NST_LIGHTNING_PAINTINGS_URL"
CACHE_ENV = "NST_LIGHTNING_CACHE"

# name -> (url, sha256). The hashes pin the exact bytes: a changed upstream file is refused, not used.
PAINTINGS: dict[str, tuple[str, str]] = {
    "tubingen": (
        f"{DEFAULT_PAINTINGS_URL}/tubingen.jpg",
        "e67d1869f01fd805385c681a80d9ebcf0f70ea4a5fe6127f0606bb1c7f4bf506",
    ),
    "starry_night": (
        f"{DEFAULT_PAINTINGS_URL}/starry_night.jpg",
        "0592ab0f7b51b3ce72608a95e53880bd93971e5b48f93a0ce8dfd3cbccf3d098",
    ),
    "the_scream": (
        f"{DEFAULT_PAINTINGS_URL}/the_scream.jpg",
        "f3075cddeb974a9ee1d6418f7f33fd05185a7ac7dcb4288bd2805d499a9dcaee",
    ),
    "shipwreck": (
        f"{DEFAULT_PAINTINGS_URL}/shipwreck.jpg",
        "4f7cf34e3cd4a5daaf3f421f059ca9a01aaa2a3afd7243d6670c9c8bc001a213",
    ),
    "seated-nude": (
        f"{DEFAULT_PAINTINGS_URL}/seated-nude.jpg",
        "f398757cfb5346842c3bc309ca65d03381b38b1f5f8d7c60abe68a804a405cf1",
    ),
    "golden_gate": (
        f"{DEFAULT_PAINTINGS_URL}/golden_gate.jpg",
        "f8476ac216e0d409af2e52bf82ad2cdc3433e23d7895e6f9b2048fc014ed57ba",
    ),
}

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # the real files are well under 2 MB: stop a runaway response early
_CHUNK = 1 << 16


def builtin_names() -> list[str]:
    """Every name ``open_builtin`` accepts, the two offline ones first."""
    return [BUILTIN_CONTENT, BUILTIN_STYLE, *PAINTINGS]


def open_builtin(name: str, cache_dir: Path | None = None) -> Image.Image:
    """Open a built-in image by name as RGB; paintings are downloaded into ``cache_dir`` on first use."""
    if name == BUILTIN_CONTENT:
        return _grace_hopper()
    if name == BUILTIN_STYLE:
        return _default_brushstrokes().copy()  # a copy: callers may edit it in place, the cache must stay intact
    if name in PAINTINGS:
        path = fetch_painting(name, cache_dir)
        with Image.open(path) as img:
            return img.convert("RGB")
    raise NSTError(f"unknown built-in image '{name}': choose one of {', '.join(builtin_names())}")


def _grace_hopper() -> Image.Image:
    import matplotlib.cbook  # imported here: matplotlib is slow to import and only this image needs it

    try:
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as exc:  # some distributions strip matplotlib's sample data
        raise NSTError(
            f"matplotlib's sample photograph grace_hopper.jpg is unavailable ({exc}); "
            "reinstall matplotlib or pass a content image path instead"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# The generated painting
# ---------------------------------------------------------------------------------------------------------------

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


@functools.lru_cache(maxsize=1)
def _default_brushstrokes() -> Image.Image:
    return brushstrokes(512, 0)


# ---------------------------------------------------------------------------------------------------------------
# Downloaded paintings
# ---------------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where downloads are kept: ``$NST_LIGHTNING_CACHE`` if set, else ``~/.cache/nst_lightning``."""
    return _default_cache_dir()


def _default_cache_dir() -> Path:
    # A separate name, because fetch_painting's ``cache_dir`` argument shadows the public function.
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(os.path.expanduser(override))
    return Path.home() / ".cache" / "nst_lightning"


def fetch_painting(name: str, cache_dir: Path | None = None, base_url: str | None = None, timeout: float = 30) -> Path:
    """Return the local path of a named painting, downloading and verifying it on first use.

    ``cache_dir`` is the cache root (default ``cache_dir()``); the file lands in ``<root>/paintings/<name>.jpg``.
    ``base_url`` (or ``$NST_LIGHTNING_PAINTINGS_URL``) replaces the folder the files are downloaded from.
    """
    if name not in PAINTINGS:
        raise NSTError(f"unknown painting '{name}': choose one of {', '.join(PAINTINGS)}")
    default_url, expected = PAINTINGS[name]
    folder = Path(cache_dir if cache_dir is not None else _default_cache_dir()) / "paintings"
    target = folder / f"{name}.jpg"
    if target.is_file():
        if file_sha256(target) == expected:
            return target
        log.warning("cached %s does not match its pinned sha256: downloading it again", target)

    url = _painting_url(default_url, base_url if base_url is not None else os.environ.get(PAINTINGS_URL_ENV))

    def download_verified(out: BinaryIO) -> None:
        got = _download(name, url, out, timeout)
        if got != expected:  # raising here makes atomic_write drop the temp file: nothing unverified lands
            raise NSTError(
                f"download of '{name}' from {url} has sha256 {got}, expected {expected}: "
                "the file changed or was corrupted; pass a local file instead"
            )

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NSTError(
            f"cannot write to the cache folder {folder} ({exc}); set {CACHE_ENV} to a writable folder"
        ) from None
    atomic_write(target, download_verified)  # other readers see no file or the whole verified file
    log.info("downloaded %s to %s", url, target)
    return target


def _painting_url(default_url: str, base_url: str | None) -> str:
    """The URL to download from; overrides must be https, or plain http to this machine only (tests)."""
    if not base_url:
        return default_url
    parsed = urllib.parse.urlsplit(base_url)
    local_http = parsed.scheme == "http" and parsed.hostname in _LOCAL_HOSTS
    if parsed.scheme != "https" and not local_http:
        raise NSTError(
            f"refusing to download paintings from {base_url}: use an https:// URL "
            "(plain http is allowed only for 127.0.0.1/localhost)"
        )
    filename = default_url.rsplit("/", 1)[1]
    return f"{base_url.rstrip('/')}/{filename}"


def _offline_error(name: str, url: str, reason: object) -> NSTError:
    reason = " ".join(str(reason).split())  # keep the message on one line
    return NSTError(
        f"could not download '{name}' from {url} ({reason}); you seem to be offline: "
        f"pass a local file instead, e.g. style=/path/to/{name}.jpg"
    )


def _download(name: str, url: str, out: BinaryIO, timeout: float) -> str:
    """Stream ``url`` into the open binary file ``out``; return the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # the scheme was checked by _painting_url
    except urllib.error.HTTPError as exc:  # the server answered: not offline, but the file is not there
        raise NSTError(
            f"could not download '{name}' from {url} (HTTP {exc.code} {exc.reason}); "
            f"pass a local file instead, e.g. style=/path/to/{name}.jpg"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _offline_error(name, url, getattr(exc, "reason", exc)) from None
    total = 0
    with response:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # connection dropped mid-transfer
                raise _offline_error(name, url, exc) from None
            if not chunk:
                break
            total += len(chunk)
            if total > _MAX_DOWNLOAD_BYTES:
                raise NSTError(
                    f"download of '{name}' from {url} exceeds {_MAX_DOWNLOAD_BYTES // 2**20} MiB: "
                    "not the expected painting; pass a local file instead"
                )
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


if __name__ == "__main__":  # quick look: python -m nst_lightning.builtin_images /tmp/brushstrokes.png
    import sys
    import time

    start = time.perf_counter()
    image = brushstrokes()
    print(f"brushstrokes(512) in {time.perf_counter() - start:.2f} s")
    image.save(sys.argv[1] if len(sys.argv) > 1 else "brushstrokes.png")
