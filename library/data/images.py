"""Loading dataset images as plain 8-bit RGB, whatever the file holds.

Training and every preprocessing command go through :func:`load_image_rgb`, so an image
looks the same to the tagger, the cropper, the doctor and the trainer: EXIF orientation
applied, transparency composited on white, CMYK / 16-bit / palette modes converted.
A file that cannot be decoded raises :class:`ImageLoadError` naming the path and the reason,
so callers can report it on one line and skip it instead of crashing.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
"""Lower-case suffixes treated as images (matched case-insensitively)."""

_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


class ImageLoadError(Exception):
    """An image file that cannot be used; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def is_image_file(path: Path) -> bool:
    """True when ``path`` has an image suffix (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Image files in ``folder``, sorted by their relative path so runs are reproducible.

    Hidden files (``.name``) are left out: they are usually editor or OS droppings.
    """
    root = Path(folder)
    candidates = root.rglob("*") if recursive else root.iterdir()
    found = [path for path in candidates if path.is_file() and is_image_file(path) and not path.name.startswith(".")]
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def load_image_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` fully into an upright 8-bit RGB image.

    Raises :class:`ImageLoadError` for zero-byte, truncated, corrupt or non-image files.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                upright = _apply_exif_orientation(image, path)
                return to_rgb(upright)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image or an unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageLoadError(path, f"image too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageLoadError(path, f"cannot decode image ({_describe(error)})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent pixels become white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_l(image)
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBa", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit integer) grey image to 8 bits instead of clipping it."""
    values = np.asarray(image, dtype=np.float64)
    scaled = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


def _apply_exif_orientation(image: Image.Image, path: Path) -> Image.Image:
    """Rotate/flip per the EXIF Orientation tag; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError) as error:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, _describe(error))
        return image.copy()


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return text or type(error).__name__
