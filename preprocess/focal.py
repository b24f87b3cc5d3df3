"""Where the interesting part of an image is, so a crop keeps it.

Three cues each give a point: detected faces (OpenCV Haar cascade, when OpenCV is installed),
local entropy (detail, texture) and strong edges. The focal point is the weighted mean of the
cues that found something; with none, it is the centre.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

Point = tuple[float, float]
FaceBox = tuple[int, int, int, int]
FaceDetector = Callable[[np.ndarray], Sequence[FaceBox]]
"""Takes a uint8 grey image (H, W) and returns face boxes ``(x, y, w, h)`` in its pixels."""

_ANALYSIS_SIDE = 256
_ENTROPY_BLOCK = 16
_ENTROPY_LEVELS = 32
_EDGE_PERCENTILE = 90.0


@dataclass(frozen=True)
class FocalWeights:
    """How strongly each cue pulls the focal point; 0 switches a cue off."""

    face: float = 0.9
    entropy: float = 0.15
    edges: float = 0.5


def focal_point(
    image: Image.Image, weights: FocalWeights = FocalWeights(), detect_faces: FaceDetector | None = None
) -> Point:
    """The focal point as fractions ``(x, y)`` of the image's width and height."""
    grey = image.convert("L")
    grey.thumbnail((_ANALYSIS_SIDE, _ANALYSIS_SIDE))
    pixels = np.asarray(grey, dtype=np.uint8)
    detector = detect_faces if detect_faces is not None else haar_face_detector()
    cues = [
        (weights.face, _face_point(pixels, detector) if detector and weights.face > 0 else None),
        (weights.entropy, _entropy_point(pixels) if weights.entropy > 0 else None),
        (weights.edges, _edge_point(pixels) if weights.edges > 0 else None),
    ]
    found = [(weight, point) for weight, point in cues if point is not None]
    if not found:
        return 0.5, 0.5
    total = sum(weight for weight, _ in found)
    x = sum(weight * point[0] for weight, point in found) / total
    y = sum(weight * point[1] for weight, point in found) / total
    return x, y


def _centroid(weights: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> Point | None:
    total = float(weights.sum())
    if total <= 0:
        return None
    return float((weights * xs).sum() / total), float((weights * ys).sum() / total)


def _edge_point(pixels: np.ndarray) -> Point | None:
    """Centroid of the strongest gradients (top 10 %), in image fractions."""
    values = pixels.astype(np.float32)
    magnitude = np.zeros_like(values)
    magnitude[:, 1:] += np.abs(np.diff(values, axis=1))
    magnitude[1:, :] += np.abs(np.diff(values, axis=0))
    if magnitude.max() <= 0:
        return None
    strong = np.where(magnitude >= np.percentile(magnitude, _EDGE_PERCENTILE), magnitude, 0.0)
    height, width = values.shape
    ys, xs = np.mgrid[0:height, 0:width]
    return _centroid(strong, (xs + 0.5) / width, (ys + 0.5) / height)


def _entropy_point(pixels: np.ndarray) -> Point | None:
    """Centroid of block-wise grey-level entropy, stressing the most detailed blocks."""
    height, width = pixels.shape
    rows, cols = height // _ENTROPY_BLOCK, width // _ENTROPY_BLOCK
    if rows == 0 or cols == 0:
        return None
    blocks = pixels[: rows * _ENTROPY_BLOCK, : cols * _ENTROPY_BLOCK]
    levels = (blocks.astype(np.int64) * _ENTROPY_LEVELS) // 256
    row_of = np.arange(rows * _ENTROPY_BLOCK) // _ENTROPY_BLOCK
    col_of = np.arange(cols * _ENTROPY_BLOCK) // _ENTROPY_BLOCK
    block_id = row_of[:, None] * cols + col_of[None, :]
    counts = np.bincount(
        (block_id * _ENTROPY_LEVELS + levels).ravel(), minlength=rows * cols * _ENTROPY_LEVELS
    ).reshape(rows * cols, _ENTROPY_LEVELS)
    probabilities = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(probabilities > 0, probabilities * np.log2(probabilities), 0.0), axis=1)
    emphasis = (entropy - entropy.min()) ** 2
    centres_y, centres_x = np.divmod(np.arange(rows * cols), cols)
    return _centroid(emphasis, (centres_x + 0.5) / cols, (centres_y + 0.5) / rows)


def _face_point(pixels: np.ndarray, detect: FaceDetector) -> Point | None:
    """Area-weighted centre of the detected faces."""
    boxes = list(detect(pixels))
    if not boxes:
        return None
    height, width = pixels.shape
    areas = np.array([w * h for _, _, w, h in boxes], dtype=np.float64)
    xs = np.array([(x + w / 2) / width for x, _, w, _ in boxes])
    ys = np.array([(y + h / 2) / height for _, y, _, h in boxes])
    return _centroid(areas, xs, ys)


@functools.cache
def haar_face_detector() -> FaceDetector | None:
    """OpenCV's frontal-face Haar cascade, or ``None`` (logged once) when OpenCV is unavailable."""
    try:
        import cv2
    except ImportError:
        logger.info("OpenCV is not installed: focal crops use entropy and edges only, no face detection")
        return None
    cascade_file = f"{cv2.data.haarcascades}haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(cascade_file) if hasattr(cv2, "CascadeClassifier") else None
    if cascade is None or cascade.empty():
        logger.info("this OpenCV build has no Haar face cascade: focal crops use entropy and edges only")
        return None

    def detect(pixels: np.ndarray) -> Sequence[FaceBox]:
        side = min(pixels.shape)
        min_size = max(8, side // 12)
        found = cascade.detectMultiScale(pixels, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        return [tuple(int(v) for v in box) for box in found]

    return detect
