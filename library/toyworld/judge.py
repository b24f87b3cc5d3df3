"""A deterministic judge of toy-world images: which colour and which shape the foreground is, or ``none``.

Hand-written measures, no learned weights, and no knowledge of where an image came from, so it can score a base
model, a LoRA and a DreamBooth run alike. The background is the median colour of the image's border; the
foreground is the largest connected region that differs from it. Its colour is the nearest named colour to the
region's median (``none`` when nothing is near); its shape follows from scale- and rotation-free measures:
solidity (area over convex-hull area: a star's points leave gaps, the convex shapes fill their hull), then how well
the region fills the smallest enclosing circle, rectangle and triangle.
Its spread (:func:`foreground_spread`) says how mottled it is: the toy world's shapes are flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from library.data.images import load_image_rgb
from library.toyworld.world import COLOURS

NONE = "none"
_FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that makes a pixel foreground
_MIN_AREA_SHARE = 0.02  # a region smaller than this share of the image is not a shape
_MAX_COLOUR_DISTANCE = 80.0  # a median colour further than this from every named colour has no name
_STAR_SOLIDITY = 0.8


@dataclass(frozen=True)
class Verdict:
    """What an image shows: a colour name and a shape name, each ``none`` when the judge cannot name one."""

    colour: str
    shape: str

    def shows(self, colour: str | None, shape: str | None) -> bool:
        """True when the image shows ``colour`` and ``shape`` (``None`` means any)."""
        return (colour is None or self.colour == colour) and (shape is None or self.shape == shape)


def judge(image: Image.Image) -> Verdict:
    """Name the foreground colour and shape of ``image``."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    region = _foreground_region(pixels)
    if region is None:
        return Verdict(NONE, NONE)
    return Verdict(_colour_name(pixels, region), _shape_name(region))


def judge_file(path: Path) -> Verdict:
    """Judge an image file; an unreadable one raises :class:`library.data.images.ImageLoadError` naming it."""
    return judge(load_image_rgb(path))


def _foreground_region(pixels: np.ndarray) -> np.ndarray | None:
    """A uint8 mask of the largest region unlike the border's median colour, or None if there is none worth naming.

    The mask is cut at half the contrast of the region's core, so a blurred edge neither grows nor shrinks it.
    """
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    distance = np.linalg.norm(pixels - np.median(border, axis=0), axis=2)
    region = _largest_region(distance > _FOREGROUND_DISTANCE)
    if region is None:
        return None
    contrast = float(np.percentile(distance[region.astype(bool)], 90))
    return _largest_region(distance > max(contrast / 2, _FOREGROUND_DISTANCE / 2))


def _largest_region(mask: np.ndarray) -> np.ndarray | None:
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < _MIN_AREA_SHARE * mask.size:
        return None
    return (labels == largest).astype(np.uint8)


def foreground_spread(image: Image.Image) -> float | None:
    """How mottled the foreground is: the mean RGB distance of its inner pixels from their median colour (None when
    the image shows no foreground). The toy world draws flat shapes, which the base model samples at about 5-8; a model
    that has learnt to paint noise draws them several times rougher, whatever their colour and shape are judged."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    region = _foreground_region(pixels)
    if region is None:
        return None
    inner = _inner_pixels(pixels, region)
    return float(np.linalg.norm(inner - np.median(inner, axis=0), axis=1).mean())


def _inner_pixels(pixels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The region's pixels ``[n, 3]`` without its edge, which is blended with the background (all of them when the
    region is too thin to have an inside)."""
    inner = cv2.erode(region, np.ones((3, 3), np.uint8))
    chosen = inner if inner.sum() >= 10 else region
    return pixels[chosen.astype(bool)]


def _colour_name(pixels: np.ndarray, region: np.ndarray) -> str:
    """The named colour nearest to the median of the region's inner pixels."""
    median = np.median(_inner_pixels(pixels, region), axis=0)
    name, distance = min(((name, float(np.linalg.norm(median - rgb))) for name, rgb in COLOURS.items()),
                         key=lambda item: item[1])
    return name if distance <= _MAX_COLOUR_DISTANCE else NONE


def _shape_name(region: np.ndarray) -> str:
    """Star if the region leaves much of its convex hull empty; else the convex shape whose smallest enclosing
    figure it fills best: a circle fills its enclosing circle, a square its enclosing rectangle, a triangle its
    enclosing triangle (each about 1 for its own shape and at most 0.79 for the others)."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    area = float(cv2.contourArea(contour))
    hull = cv2.convexHull(contour)
    if area <= 0 or area / max(float(cv2.contourArea(hull)), 1e-6) < _STAR_SOLIDITY:
        return "star"
    _, radius = cv2.minEnclosingCircle(hull)
    (_, (width, height), _) = cv2.minAreaRect(hull)
    triangle_area, _ = cv2.minEnclosingTriangle(hull.astype(np.float32))
    fills = {
        "circle": area / max(math.pi * radius**2, 1e-6),
        "square": area / max(width * height, 1e-6),
        "triangle": area / max(float(triangle_area), 1e-6),
    }
    return max(fills, key=fills.__getitem__)
