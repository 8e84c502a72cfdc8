"""Built-in images, so a first run needs no files: a photograph, a generated painting, and famous paintings.

- ``grace_hopper``: the public-domain photograph that matplotlib ships as sample data (no download).
- ``brushstrokes``: a painterly style image, painted by ``painter.py``, deterministic for a (size, seed).
- the names in ``PAINTINGS``: the classic neural-style example images, downloaded on first use from pinned
  URLs, checked against a pinned sha256 and kept in ``cache_dir()/paintings``. Nothing downloaded is executed.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import torch.hub
from PIL import Image

from nst_lightning.inputs import painter
from nst_lightning.inputs.painter import brushstrokes
from nst_lightning.util import interrupts
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import WriteError, atomic_write, cache_dir, cache_unwritable, cache_write, file_sha256

log = logging.getLogger(__name__)

BUILTIN_CONTENT = "grace_hopper"
BUILTIN_STYLE = "brushstrokes"

DEFAULT_PAINTINGS_URL = "https://raw.githubusercontent.com/jcjohnson/neural-style/master/examples/inputs"
PAINTINGS_URL_ENV = "NST_LIGHTNING_PAINTINGS_URL"

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
    "hoovertowernight": (  # a night photograph: the dark image of the photorealistic study
        f"{DEFAULT_PAINTINGS_URL}/hoovertowernight.jpg",
        "8852910ed1594af535c3dee012b020b9ee4045798645885d20a9445d12e98093",
    ),
}

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


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
        path = fetch_painting(name, cache_dir, in_memory=True)
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


@functools.lru_cache(maxsize=1)
def _default_brushstrokes() -> Image.Image:
    """The default style, kept as a PNG in the cache folder: painting it takes about half a second, reading it back
    a few milliseconds, and it is the style of every run that names none. The file name holds a digest of the
    painter's source, so a changed painter paints again; an unreadable file is painted again and replaced."""
    digest = file_sha256(painter.__file__)[:16]
    path = _default_cache_dir() / "builtin" / f"brushstrokes-512-0-{digest}.png"
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception:  # absent, truncated or not an image: paint it
        pass
    image = brushstrokes(512, 0)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    cache_write(path, encoded.getvalue())  # a cache that cannot keep it only costs the painting next time
    return image


# ---------------------------------------------------------------------------------------------------------------
# Downloaded paintings
# ---------------------------------------------------------------------------------------------------------------


_default_cache_dir = cache_dir  # fetch_painting's ``cache_dir`` argument shadows the function


def fetch_painting(
    name: str,
    cache_dir: Path | None = None,
    base_url: str | None = None,
    timeout: float = 30,
    in_memory: bool = False,
) -> Path | io.BytesIO:
    """Return the local path of a named painting, downloading and verifying it on first use.

    ``cache_dir`` is the cache root (default ``cache_dir()``); the file lands in ``<root>/paintings/<name>.jpg``.
    ``base_url`` (or ``$NST_LIGHTNING_PAINTINGS_URL``) replaces the folder the files are downloaded from.
    ``in_memory``: where the cache cannot take the file (full, read-only), say so once and return its bytes.
    """
    if name not in PAINTINGS:
        raise NSTError(f"unknown painting '{name}': choose one of {', '.join(PAINTINGS)}")
    default_url, expected = PAINTINGS[name]
    target = Path(cache_dir if cache_dir is not None else _default_cache_dir()) / "paintings" / f"{name}.jpg"
    if target.is_file():
        if file_sha256(target) == expected:
            return target
        log.warning("cached %s does not match its pinned sha256: downloading it again", target)
    url = _painting_url(default_url, base_url if base_url is not None else os.environ.get(PAINTINGS_URL_ENV))
    with interrupts.raising(), _socket_timeout(timeout):  # a Ctrl-C abandons the download at once
        data = _download(name, url, expected)
    try:
        atomic_write(target, lambda f: f.write(data))  # other readers see no file or the whole verified file
    except WriteError as exc:
        if not in_memory:
            raise
        cache_unwritable(exc)  # the painting is small: keep it in memory
        return io.BytesIO(data)
    log.info("downloaded %s to %s", url, target)
    return target


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub's download takes no timeout: a silent server would hang it without one."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _download(name: str, url: str, expected: str) -> bytes:
    """torch.hub's download, checked against the pinned sha256 (a file that fails it is never kept)."""
    try:
        with tempfile.TemporaryDirectory(prefix="nst-download-") as folder:
            path = Path(folder) / f"{name}.jpg"
            torch.hub.download_url_to_file(url, str(path), hash_prefix=expected, progress=False)
            return path.read_bytes()
    except urllib.error.HTTPError as exc:  # the server answered: not offline, but the file is not there
        raise NSTError(
            f"could not download '{name}' from {url} (HTTP {exc.code} {exc.reason}); "
            f"pass a local file instead, e.g. style=/path/to/{name}.jpg"
        ) from None
    except RuntimeError as exc:  # download_url_to_file's hash check
        got = str(exc).rsplit('got "', 1)[-1].rstrip('")')
        raise NSTError(
            f"download of '{name}' from {url} has sha256 {got}, expected {expected}: "
            "the file changed or was corrupted; pass a local file instead"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        reason = " ".join(str(getattr(exc, "reason", exc)).split())  # one line
        raise NSTError(
            f"could not download '{name}' from {url} ({reason}); you seem to be offline: "
            f"pass a local file instead, e.g. style=/path/to/{name}.jpg"
        ) from None


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


if __name__ == "__main__":  # quick look: python -m nst_lightning.inputs.builtin /tmp/brushstrokes.png
    import sys
    import time

    start = time.perf_counter()
    image = brushstrokes()
    print(f"brushstrokes(512) in {time.perf_counter() - start:.2f} s")
    image.save(sys.argv[1] if len(sys.argv) > 1 else "brushstrokes.png")
