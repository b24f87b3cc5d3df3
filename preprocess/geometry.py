"""Pure size arithmetic for ``crop``: how far to scale, where crop windows and tiles go."""

from __future__ import annotations

import math
from dataclasses import dataclass

from library.data.buckets import Size


@dataclass(frozen=True)
class Window:
    """A crop rectangle inside the scaled image."""

    left: int
    top: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The ``(left, top, right, bottom)`` tuple Pillow's ``crop`` takes."""
        return self.left, self.top, self.left + self.width, self.top + self.height


def reachable_target(size: Size, target: Size, multiple: int, upscale: bool) -> Size:
    """``target`` itself, or when reaching it would enlarge the image and ``upscale`` is off,
    the largest box of the same aspect ratio inside the image, floored to ``multiple``."""
    shrink = min(size[0] / target[0], size[1] / target[1])
    if upscale or shrink >= 1:
        return target
    return (
        max(multiple, math.floor(target[0] * shrink / multiple) * multiple),
        max(multiple, math.floor(target[1] * shrink / multiple) * multiple),
    )


def fit_inside(size: Size, target: Size, upscale: bool) -> Size:
    """Largest aspect-preserving size within ``target`` (not above ``size`` unless ``upscale``)."""
    scale = min(target[0] / size[0], target[1] / size[1])
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def centred_window(scaled: Size, target: Size, focus: tuple[float, float] = (0.5, 0.5)) -> Window:
    """The ``target`` window centred on ``focus`` (fractions of the image), kept inside the image."""
    left = _place(scaled[0], target[0], focus[0])
    top = _place(scaled[1], target[1], focus[1])
    return Window(left, top, target[0], target[1])


def _place(length: int, window: int, focus: float) -> int:
    start = round(focus * length - window / 2)
    return min(max(0, start), length - window)


def needs_split(scaled: Size, target: Size, threshold: float) -> bool:
    """True when the covering scale leaves more than ``threshold`` of a target side to spare."""
    return scaled[0] > target[0] * (1 + threshold) or scaled[1] > target[1] * (1 + threshold)


def tile_windows(scaled: Size, target: Size, overlap: float) -> list[Window]:
    """Evenly spaced ``target`` tiles covering the whole scaled image, neighbours overlapping
    by at least ``overlap`` of a tile side."""
    lefts = _tile_starts(scaled[0], target[0], overlap)
    tops = _tile_starts(scaled[1], target[1], overlap)
    return [Window(left, top, target[0], target[1]) for top in tops for left in lefts]


def _tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile * (1 - overlap)
    count = math.ceil((length - tile) / stride) + 1
    span = length - tile
    return [round(span * index / (count - 1)) for index in range(count)]
