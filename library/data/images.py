"""Opening dataset images, and loading them as plain 8-bit RGB, whatever the file holds.

Every image is opened through :func:`open_image`: the trainer's header scan (:func:`read_image_size`), its full
decode and every preprocessing command (:func:`load_image_rgb`), so they refuse the same files for the same reason,
and an image looks the same to the tagger, the cropper, the doctor and the trainer: EXIF orientation applied,
transparency composited on white, CMYK / 16-bit / palette modes converted. A file that cannot be used (empty,
truncated, not an image, or declaring more pixels than can be decoded safely) raises :class:`ImageLoadError` naming
the path and the reason, so callers can report it on one line and skip it instead of crashing.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from library.data.buckets import Size

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
"""Lower-case suffixes treated as images (matched case-insensitively)."""

_BACKGROUND = (255, 255, 255)
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 degrees: width and height swap


class ImageLoadError(Exception):
    """An image file that cannot be used; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def describe_unreadable(errors: Sequence[ImageLoadError], limit: int = 10) -> str:
    """``N unreadable image(s): <path> (<reason>), ...``: the one line the trainer and the doctor name bad files
    with, the first ``limit`` of them."""
    named = ", ".join(f"{error.path} ({error.reason})" for error in errors[:limit])
    more = f" and {len(errors) - limit} more" if len(errors) > limit else ""
    return f"{len(errors)} unreadable image(s): {named}{more}"


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


@dataclass(frozen=True)
class FolderListing:
    """One image folder as training sees it: its images, and the entries it passes over with the reason, so a
    file the user meant to train on is never dropped without a word."""

    images: list[Path]
    passed_over: list[tuple[Path, str]]


def list_folder(folder: str | os.PathLike[str], caption_extension: str) -> FolderListing:
    """The images of ``folder`` (as :func:`list_images`) and what is passed over: files in other formats,
    symlinks to nothing or to themselves, folders named like images. Hidden entries, the caption files
    (``caption_extension``) and other sub-folders are neither."""
    images: list[Path] = []
    passed_over: list[tuple[Path, str]] = []
    for path in sorted(Path(folder).iterdir(), key=lambda entry: entry.name):
        if path.name.startswith("."):
            continue
        reason = _passed_over_reason(path, caption_extension)
        if reason:
            passed_over.append((path, reason))
        elif reason is None:
            images.append(path)
    return FolderListing(images, passed_over)


def _passed_over_reason(path: Path, caption_extension: str) -> str | None:
    """Why the scan passes over ``path``: None for an image, "" for an entry that is not meant to be one."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symlink loop"
        return "a symlink to a missing file" if path.is_symlink() else f"cannot be read ({error.strerror})"
    if stat.S_ISDIR(mode):
        return "a folder named like an image" if is_image_file(path) else ""
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if is_image_file(path):
        return None
    if path.suffix.lower() == caption_extension.lower():
        return ""
    return f"{path.suffix} is not a supported image format" if path.suffix else "no image file extension"


@contextmanager
def open_image(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """Open ``path`` lazily (header read, pixels not yet decoded) for reading inside the ``with`` block.

    The one way a dataset image is opened: every failure while opening it or reading it inside the block, a
    decompression bomb included, becomes an :class:`ImageLoadError` naming the file, so the scan, the decode, the
    doctor and the preprocess commands refuse the same files with the same reason.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image or an unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(path, f"too large to decode safely, over {Image.MAX_IMAGE_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageLoadError(path, f"cannot decode image ({_describe(error)})") from None


def read_image_size(path: str | os.PathLike[str]) -> Size:
    """Upright (EXIF-rotated) ``(width, height)`` from the file header, without decoding the pixels."""
    with open_image(path) as image:
        width, height = image.size
        # Only look at EXIF the header already holds: asking a PNG for more decodes the whole file.
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if "exif" in image.info else 1
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def load_image_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` fully into an upright 8-bit RGB image.

    Raises :class:`ImageLoadError` for zero-byte, truncated, corrupt, oversized or non-image files.
    """
    return load_image_and_alpha(path)[0]


def load_image_and_alpha(path: str | os.PathLike[str]) -> tuple[Image.Image, Image.Image | None]:
    """:func:`load_image_rgb` and the image's upright 8-bit alpha channel (mode ``L``), or None when it has none
    (the alpha-channel masks of masked loss)."""
    with open_image(path) as image:
        image.load()
        upright = _apply_exif_orientation(image, Path(path))
        return to_rgb(upright), alpha_channel(upright)


def has_alpha(image: Image.Image) -> bool:
    """True when ``image`` carries transparency (an alpha band or a transparent palette colour)."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def alpha_channel(image: Image.Image) -> Image.Image | None:
    """The alpha channel of ``image`` as an 8-bit ``L`` image, or None when it has no transparency."""
    if not has_alpha(image):
        return None
    return image.convert("RGBA").getchannel("A")


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
