"""Generators for the awkward image files users' datasets contain, written at test time."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
EXIF_ORIENTATION = 0x0112


def two_colour_image(
    size: tuple[int, int], left: tuple[int, int, int] = RED, right: tuple[int, int, int] = BLUE
) -> Image.Image:
    """Left half ``left``, right half ``right``: orientation changes are visible in the pixels."""
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def exif_rotated_jpeg(path: Path) -> Path:
    """A 60x40 stored JPEG whose EXIF says 'rotate 90° clockwise' (orientation 6): shown 40x60."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    two_colour_image((60, 40)).save(path, format="JPEG", quality=95, exif=exif)
    return path


def cmyk_jpeg(path: Path) -> Path:
    """A pure-red picture stored as CMYK (print workflows produce these)."""
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(path, format="JPEG", quality=95)
    return path


def sixteen_bit_png(path: Path, value: int = 32896) -> Path:
    """A 16-bit grey PNG (mode ``I;16``); 32896 / 257 = 128 in 8 bits."""
    Image.fromarray(np.full((20, 30), value, dtype=np.uint16)).save(path, format="PNG")
    return path


def palette_png_with_transparency(path: Path) -> Path:
    """A palette PNG: left half transparent (index 0), right half opaque red (index 1)."""
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (10, 0, 20, 10))
    image.save(path, format="PNG", transparency=0)
    return path


def rgba_png(path: Path) -> Path:
    """Fully transparent blue on the left, opaque blue on the right."""
    image = Image.new("RGBA", (20, 10), (0, 0, 255, 0))
    image.paste((0, 0, 255, 255), (10, 0, 20, 10))
    image.save(path, format="PNG")
    return path


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut off half-way, as an interrupted download leaves it."""
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def decompression_bomb_png(path: Path, side: int = 100_000) -> Path:
    """A PNG of a few dozen bytes whose header declares ``side`` x ``side`` grey pixels (10^10 by default)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def not_an_image(path: Path) -> Path:
    path.write_text("this is text with an image suffix", encoding="utf-8")
    return path


def shapes_image(size: tuple[int, int], seed: int) -> Image.Image:
    """A distinct picture per seed: coloured rectangles and ellipses on a tinted background."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, x1 = sorted(int(v) for v in rng.integers(0, size[0], 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, size[1], 2))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x1 + 1, y1 + 1), fill=colour)
    return image
