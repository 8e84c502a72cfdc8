"""Images in and out: a path or a built-in name -> RGB float tensor (1, 3, H, W) in [0, 1]; atomic PNG save.

Odd modes (grey, palette, RGBA, CMYK, 16-bit) are converted rather than refused, EXIF orientation is
applied, and anything unreadable becomes one NSTError line that names the file and the problem.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from nst_lightning.inputs import builtin as builtin_images
from nst_lightning.util.errors import NSTError
from nst_lightning.util.files import atomic_write, shown, too_long

log = logging.getLogger(__name__)


def open_image(spec: str, what: str = "image", long_side: int | None = None) -> Image.Image:
    """Open a path or a built-in name as an RGB PIL image, not yet resized.

    With ``long_side``, a large JPEG is decoded at a reduced scale (still >= long_side): a 20000 px
    photo then costs a fraction of its full-size memory.
    """
    path = Path(os.path.expanduser(str(spec)))
    if reason := too_long(path):  # exists() would raise: the system refuses the name before looking
        raise NSTError(f"{what} '{shown(spec)}' cannot be opened: {reason}")
    if not path.exists() and str(spec) in builtin_images.builtin_names():
        return builtin_images.open_builtin(str(spec))
    if not path.exists():
        names = ", ".join(builtin_images.builtin_names())
        raise NSTError(f"{what} '{spec}' not found: give an image file path or a built-in name ({names})")
    if path.is_dir():
        raise NSTError(f"{what} '{spec}' is a directory: give an image file")
    if not path.is_file():  # reading a FIFO would wait for a writer, and PIL needs to seek: a pipe cannot be read
        raise NSTError(
            f"{what} '{spec}' is not a regular file (a pipe, socket or device, e.g. from <(...)): "
            "save the image to a file and give its path"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            if long_side is not None and img.format == "JPEG":
                img.draft("RGB", (long_side, long_side))
            n_frames = getattr(img, "n_frames", 1)
            if n_frames > 1:
                log.warning("%s '%s' has %d frames: using the first", what, spec, n_frames)
            img = ImageOps.exif_transpose(img)  # also loads the pixels: truncation shows up here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise NSTError(
            f"{what} '{spec}' is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} pixels)"
        ) from None
    except UnidentifiedImageError:
        raise NSTError(f"{what} '{spec}' is not an image PIL can read (empty, corrupt or another format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise NSTError(f"{what} '{spec}' cannot be decoded ({exc}): is the file truncated or corrupt?") from None
    return to_rgb(img, f"{what} '{spec}'")


def to_rgb(img: Image.Image, label: str = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent areas become white."""
    if img.mode == "RGB":
        return img
    log.info("%s: converting mode %s to RGB", label, img.mode)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: rescale, don't clip to 255
        arr = torch.from_numpy(np.asarray(img, dtype=np.float32)).clamp(min=0)
        full_scale = max(float(arr.max()), 65535.0)  # 16-bit full scale, not the image's own maximum
        img = Image.fromarray((arr / full_scale * 255.0).round().byte().numpy(), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def resize_long_side(img: Image.Image, long_side: int) -> Image.Image:
    """Resize so the longer side is ``long_side`` pixels, keeping the aspect ratio."""
    w, h = img.size
    scale = long_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def pil_to_batch(img: Image.Image) -> Tensor:
    """PIL RGB -> float tensor (1, 3, H, W) in [0, 1]."""
    return pil_to_tensor(img).float().div(255.0).unsqueeze(0).contiguous()


def load_image(spec: str, long_side: int | None = None, what: str = "image") -> Tensor:
    """Path or built-in name -> (1, 3, H, W) in [0, 1], its long side resized to ``long_side``."""
    img = open_image(spec, what, long_side)
    if long_side is not None:
        img = resize_long_side(img, long_side)
    return pil_to_batch(img)


def tensor_to_pil(image: Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] (clamped) -> PIL RGB."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a PNG atomically (temp file + rename), so no reader sees half a file."""
    encoded = io.BytesIO()  # encoded first: a full disk's message can say how much space the image needs
    tensor_to_pil(image).save(encoded, format="PNG")
    return atomic_write(path, encoded.getvalue())


def white_noise(shape: tuple[int, ...], seed: int) -> Tensor:
    """The paper's white-noise start: i.i.d. uniform pixels in [0, 1], reproducible from ``seed``."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))
