"""Per-image loss masks (masked loss): where they come from, how they are read, and how they shrink to latents.

A mask is an 8-bit greyscale picture at the image's size: white (255) = learn this pixel fully, black = ignore it,
grey = weigh it partially. It comes from a same-stem file in the subset's mask folder (sd-scripts'
``conditioning_data_dir``; the red channel of a colour file, as sd-scripts reads it) or from the image's alpha
channel (sd-scripts' ``alpha_mask``); an alpha-masked image without transparency weighs 1 everywhere.

The mask goes through the same resize, crop and flip as its image (``transforms.make_sample``), then is reduced to
the latent grid by an area average (:func:`reduce_mask`), so a latent cell half covered by the mask weighs one half.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from library.data.images import (
    ImageLoadError,
    has_alpha,
    list_images,
    load_image_and_alpha,
    load_image_rgb,
    open_image,
)

_ASPECT_TOLERANCE = 0.01  # a mask saved at another scale (same shape) is resized; another shape is refused


class MaskError(Exception):
    """A mask that cannot be used; ``str()`` names the file and what to do."""


def mask_index(folder: Path) -> dict[str, list[Path]]:
    """The images of a mask folder by file name stem (several files may share one: the caller refuses that)."""
    found: dict[str, list[Path]] = defaultdict(list)
    for path in list_images(folder):
        found[path.stem].append(path)
    return found


def find_mask(index: dict[str, list[Path]], image: Path) -> Path | None:
    """The mask of ``image`` in a :func:`mask_index`, None when it has none; two candidates are an error."""
    candidates = index.get(image.stem, [])
    if len(candidates) > 1:
        names = ", ".join(str(path) for path in candidates)
        raise MaskError(f"{image}: several masks share its name ({names}); keep one")
    return candidates[0] if candidates else None


def read_mask_file(path: Path, image_size: tuple[int, int]) -> Image.Image:
    """The mask in ``path`` as an ``L`` image of ``image_size`` (width, height); a mask of another scale but the
    same shape is resized, one of another shape is refused."""
    try:
        mask = load_image_rgb(path).getchannel("R")
    except ImageLoadError as error:
        raise MaskError(f"mask {error}; replace or remove the mask file") from None
    if mask.size == image_size:
        return mask
    mask_aspect, image_aspect = mask.size[0] / mask.size[1], image_size[0] / image_size[1]
    if abs(mask_aspect / image_aspect - 1) > _ASPECT_TOLERANCE:
        raise MaskError(
            f"mask {path}: {mask.size[0]}x{mask.size[1]} does not have the shape of its image "
            f"({image_size[0]}x{image_size[1]}); make it the image's size"
        )
    return resize_mask(mask, image_size)


def resize_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale a mask to ``size`` (width, height): area average to shrink, bilinear to enlarge (a mask never rings)."""
    if mask.size == size:
        return mask
    shrinking = size[0] * size[1] < mask.size[0] * mask.size[1]
    return mask.resize(size, Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def mask_folder_for(mask_dir: Path, image_dir: Path) -> Path:
    """Where the masks of ``image_dir`` are: ``mask_dir/<image_dir's name>/`` when that folder exists (the layout of
    ``N_name`` folders), else ``mask_dir`` itself."""
    nested = mask_dir / image_dir.name
    return nested if nested.is_dir() else mask_dir


def load_image_and_mask(path: Path, alpha_mask: bool, mask_path: Path | None) -> tuple[Image.Image, Image.Image | None]:
    """The RGB image and its mask (None: weight 1 everywhere). ``mask_path`` wins over ``alpha_mask``."""
    if mask_path is not None:
        image = load_image_rgb(path)
        return image, read_mask_file(mask_path, image.size)
    if alpha_mask:
        return load_image_and_alpha(path)
    return load_image_rgb(path), None


def header_has_alpha(path: Path) -> bool:
    """True when the file declares transparency (header only: cheap enough for the doctor)."""
    with open_image(path) as image:
        return has_alpha(image)


def mask_to_tensor(mask: Image.Image) -> torch.Tensor:
    """8-bit ``L`` mask -> float ``[1, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0).unsqueeze(0)


def reduce_mask(masks: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """``[B, 1, H, W]`` masks area-averaged to ``size`` (h, w): each latent cell weighs the mean of its pixels."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks, size=tuple(size), mode="area")
