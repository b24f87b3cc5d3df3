"""Aspect-ratio bucketing with the semantics sd-scripts users know.

A *bucket* is a training size ``(width, height)`` whose sides are multiples of ``steps`` and
whose area does not exceed the training resolution's area. Each image goes to the bucket
whose aspect ratio is closest to its own, is scaled to cover it and cropped to it.
With ``no_upscale`` an image gets a bucket derived from its own size instead (shrunk to
the resolution's area when larger, never enlarged), so small images are not blown up.
A model family whose image sides must be multiples of some size (``resolution_multiple``:
16 for FLUX.1, which packs 2x2 latents) sets ``multiple``: bucket sides then step by
``steps`` rounded up to it, and the size without buckets is floored to it.

Everything here is plain data so the trainer, the ``crop`` command and the ``doctor``
report compute exactly the same sizes.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketParams:
    """The bucketing settings of a training config.

    ``resolution`` is the training size (width, height); with ``enabled=False`` every image is
    scaled to cover it and cropped to exactly that size.
    """

    resolution: Size = (512, 512)
    enabled: bool = True
    min_reso: int = 256
    max_reso: int = 1024
    steps: int = 64
    no_upscale: bool = False
    multiple: int = 1

    def __post_init__(self) -> None:
        width, height = self.resolution
        if width <= 0 or height <= 0:
            raise ValueError(f"resolution must be positive (got {width}x{height})")
        if self.steps <= 0:
            raise ValueError(f"bucket_reso_steps must be >= 1 (got {self.steps})")
        if self.multiple <= 0:
            raise ValueError(f"the resolution multiple must be >= 1 (got {self.multiple})")
        if min(width, height) < self.multiple:
            raise ValueError(f"resolution {width}x{height} is below the model's {self.multiple} px multiple")
        if not 0 < self.min_reso <= self.max_reso:
            raise ValueError(f"need 0 < min_bucket_reso <= max_bucket_reso (got {self.min_reso}, {self.max_reso})")
        if not self.enabled or self.no_upscale:
            return
        if max(width, height) > self.max_reso:
            raise ValueError(f"max_bucket_reso ({self.max_reso}) is smaller than the resolution {width}x{height}")
        if not make_buckets(self.resolution, self.min_reso, self.max_reso, self.grid):
            raise ValueError(
                f"no bucket fits resolution {width}x{height} with steps {self.grid} "
                f"and sides {self.min_reso}..{self.max_reso}"
            )

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]

    @property
    def grid(self) -> int:
        """What bucket sides are multiples of: ``steps``, rounded up to a multiple of ``multiple``."""
        return -(-self.steps // self.multiple) * self.multiple

    @property
    def fixed_size(self) -> Size:
        """The one training size without buckets: the resolution, each side floored to ``multiple``."""
        width, height = self.resolution
        return width // self.multiple * self.multiple, height // self.multiple * self.multiple


@dataclass(frozen=True)
class ResizePlan:
    """How one image becomes one training sample: resize to ``resized``, crop to ``bucket``."""

    original: Size
    resized: Size
    bucket: Size

    def crop_offset(self, random_crop: bool = False, rng: random.Random | None = None) -> Size:
        """Top-left corner of the crop inside the resized image (centred unless ``random_crop``)."""
        spare_x = self.resized[0] - self.bucket[0]
        spare_y = self.resized[1] - self.bucket[1]
        if random_crop:
            rng = rng or random.Random()
            return rng.randint(0, spare_x), rng.randint(0, spare_y)
        return spare_x // 2, spare_y // 2


def make_buckets(resolution: Size, min_reso: int = 256, max_reso: int = 1024, steps: int = 64) -> list[Size]:
    """All bucket sizes for a resolution, sorted: the square plus every width/height pair that
    fits the area, with both sides between ``min_reso`` and ``max_reso`` and multiples of ``steps``."""
    max_area = resolution[0] * resolution[1]
    low = math.ceil(min_reso / steps) * steps
    high = (max_reso // steps) * steps
    square = int(math.isqrt(max_area) // steps) * steps
    buckets: set[Size] = {(square, square)} if square > 0 else set()
    for width in range(low, high + 1, steps):
        height = min(high, (max_area // width) // steps * steps)
        if height >= low:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


class BucketAssigner:
    """Chooses the bucket and resize for image sizes under one set of :class:`BucketParams`."""

    def __init__(self, params: BucketParams) -> None:
        self.params = params
        self.buckets: list[Size] = (
            make_buckets(params.resolution, params.min_reso, params.max_reso, params.grid)
            if params.enabled and not params.no_upscale
            else []
        )
        self._ratios = [width / height for width, height in self.buckets]

    def plan(self, size: Size) -> ResizePlan:
        """The :class:`ResizePlan` for an image of ``size`` (width, height)."""
        width, height = size
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive (got {width}x{height})")
        if not self.params.enabled:
            bucket = self.params.fixed_size
        elif self.params.no_upscale:
            bucket = self._own_size_bucket(size)
            if width * height <= self.params.max_area and width >= bucket[0] and height >= bucket[1]:
                # Small images are only cropped to the bucket, never resampled.
                return ResizePlan(original=size, resized=size, bucket=bucket)
        else:
            bucket = self.closest_bucket(size)
        return ResizePlan(original=size, resized=cover_size(size, bucket), bucket=bucket)

    def closest_bucket(self, size: Size) -> Size:
        """The predefined bucket whose aspect ratio is nearest to the image's."""
        ratio = size[0] / size[1]
        index = min(range(len(self._ratios)), key=lambda i: abs(self._ratios[i] - ratio))
        return self.buckets[index]

    def _own_size_bucket(self, size: Size) -> Size:
        """Bucket for ``no_upscale``: the image's own size (shrunk to the max area), floored to the grid."""
        width, height = size
        steps = self.params.grid
        if width * height > self.params.max_area:
            ratio = width / height
            scaled_w = math.sqrt(self.params.max_area * ratio)
            scaled_h = self.params.max_area / scaled_w
            by_width = _floor_pair(scaled_w, scaled_w / ratio, steps)
            by_height = _floor_pair(scaled_h * ratio, scaled_h, steps)
            return min(by_width, by_height, key=lambda b: abs(b[0] / b[1] - ratio))
        return _floor_pair(width, height, steps)


def _floor_pair(width: float, height: float, steps: int) -> Size:
    """Both sides floored to multiples of ``steps``, never below one step."""
    return max(steps, int(width) // steps * steps), max(steps, int(height) // steps * steps)


def cover_size(size: Size, target: Size) -> Size:
    """Smallest aspect-preserving scale of ``size`` that covers ``target`` in both directions."""
    scale = max(target[0] / size[0], target[1] / size[1])
    return max(target[0], round(size[0] * scale)), max(target[1], round(size[1] * scale))


def bucket_table(sizes: Iterable[Size], params: BucketParams) -> dict[Size, int]:
    """How many images land in each bucket, sorted by bucket size."""
    assigner = BucketAssigner(params)
    counts = Counter(assigner.plan(size).bucket for size in sizes)
    return dict(sorted(counts.items()))
