"""From a decoded image to a training tensor: resize, crop, flip, colour jitter, scale to [-1, 1].

The resize/crop sizes come from the image's ``ResizePlan`` (the bucket code), so the trainer, the latent cache and
the ``crop`` command agree on every pixel. A loss mask goes through the same resize, crop and flip as its image
(area-averaged when shrunk), never through the colour jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from library.data.buckets import ResizePlan, Size
from library.data.masks import mask_to_tensor, resize_mask

_HUE_SHIFT = 8 / 180  # fraction of the hue circle: +-16 degrees, as sd-scripts' color_aug
_SATURATION_SCALE = (0.9, 1.1)


@dataclass(frozen=True)
class Sample:
    """A training image and the SDXL size conditioning that describes it, all (height, width) in pixels."""

    pixels: torch.Tensor  # [3, H, W] in [-1, 1]
    original_size: Size
    crop_top_left: Size
    target_size: Size
    mask: torch.Tensor | None = None  # [1, H, W] in [0, 1]; None = weight 1 everywhere


def resize_and_crop(image: Image.Image, plan: ResizePlan, offset: Size, is_mask: bool = False) -> Image.Image:
    """Scale to ``plan.resized`` (Lanczos to shrink, bicubic to enlarge; a mask as :func:`resize_mask` does), then
    crop the bucket at ``offset``."""
    if is_mask:
        image = resize_mask(image, plan.resized)
    elif image.size != plan.resized:
        shrinking = plan.resized[0] * plan.resized[1] < image.size[0] * image.size[1]
        image = image.resize(plan.resized, Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC)
    left, top = offset
    return image.crop((left, top, left + plan.bucket[0], top + plan.bucket[1]))


def jitter_colour(image: Image.Image, rng: random.Random) -> Image.Image:
    """Shift the hue a little and scale the saturation a little."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-_HUE_SHIFT, _HUE_SHIFT) * 256.0) % 256.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*_SATURATION_SCALE), 0, 255)
    return Image.fromarray(hsv.round().astype(np.uint8), mode="HSV").convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB -> float ``[3, H, W]`` in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def size_conditioning(plan: ResizePlan, offset: Size, flipped: bool) -> tuple[Size, Size, Size]:
    """SDXL's (original size, crop top-left, target size), each (height, width) in pixels.

    ``offset`` is the (left, top) crop corner in the resized image; a mirrored sample's crop starts where the
    unmirrored one ended, seen from the other side.
    """
    left, top = offset
    if flipped:
        left = plan.resized[0] - left - plan.bucket[0]
    return (plan.original[1], plan.original[0]), (top, left), (plan.bucket[1], plan.bucket[0])


def make_sample(
    image: Image.Image,
    plan: ResizePlan,
    rng: random.Random | None = None,
    random_crop: bool = False,
    flip: bool = False,
    color_aug: bool = False,
    mask: Image.Image | None = None,
) -> Sample:
    """One training sample (with its ``mask``, an ``L`` image of the image's size, transformed alike); without
    ``rng`` the crop is centred and nothing random happens."""
    offset = plan.crop_offset(random_crop and rng is not None, rng)
    cropped = resize_and_crop(image, plan, offset)
    if color_aug and rng is not None:
        cropped = jitter_colour(cropped, rng)
    if mask is not None:
        mask = resize_and_crop(mask, plan, offset, is_mask=True)
    if flip:
        cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mask is not None else None
    original, crop_top_left, target = size_conditioning(plan, offset, flip)
    mask_tensor = mask_to_tensor(mask) if mask is not None else None
    return Sample(to_tensor(cropped), original, crop_top_left, target, mask_tensor)
