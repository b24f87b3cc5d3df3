"""Near-duplicate detection with a difference hash (dHash) plus the mean colour.

The hash compares neighbouring pixels of a 9x8 grey thumbnail: 64 bits that survive resizing,
re-encoding and small colour changes, so copies of one picture at different sizes or JPEG
qualities land within a few bits of each other, while different pictures differ in ~32 bits.
Flat or very simple pictures share a hash whatever their colour, so two images also need
close mean colours to count as duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

_HASH_SIDE = 8
DEFAULT_MAX_DISTANCE = 4
_MAX_COLOUR_DIFFERENCE = 16


@dataclass(frozen=True)
class Fingerprint:
    dhash: int
    colour: tuple[int, int, int]


def fingerprint(image: Image.Image) -> Fingerprint:
    """The 64-bit difference hash and the mean RGB colour of an image."""
    grey = image.convert("L").resize((_HASH_SIDE + 1, _HASH_SIDE), Image.Resampling.BOX)
    pixels = np.asarray(grey, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    mean = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return Fingerprint(int(np.packbits(bits).view(">u8")[0]), tuple(mean))


def near_duplicate_groups(prints: Sequence[Fingerprint], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[list[int]]:
    """Indices of images within ``max_distance`` hash bits and a similar mean colour, grouped
    transitively. Groups are sorted lists of indices ordered by first index; singletons are left out."""
    hashes = np.array([item.dhash for item in prints], dtype=np.uint64)
    colours = np.array([item.colour for item in prints], dtype=np.int16).reshape(-1, 3)
    parent = list(range(len(prints)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for index in range(len(prints) - 1):
        close_hash = np.bitwise_count(hashes[index + 1 :] ^ hashes[index]) <= max_distance
        close_colour = np.abs(colours[index + 1 :] - colours[index]).max(axis=1) <= _MAX_COLOUR_DIFFERENCE
        for offset in np.flatnonzero(close_hash & close_colour):
            parent[root(index + 1 + int(offset))] = root(index)
    groups: dict[int, list[int]] = {}
    for index in range(len(prints)):
        groups.setdefault(root(index), []).append(index)
    return sorted((members for members in groups.values() if len(members) > 1), key=lambda group: group[0])
