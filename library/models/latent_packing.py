"""Latents as a token sequence: patches of ``patch x patch`` latent pixels packed into one token, with position ids.

A DiT family such as FLUX.1 reads its latent image as a sequence of tokens, each holding a 2x2 patch of all latent
channels (16 channels -> 64 features), and locates each token by rotary position ids ``(0, row, column)``; text
tokens all sit at position ``(0, 0, 0)``. The layout is FluxPipeline's (``_pack_latents``, ``_unpack_latents``,
``_prepare_latent_image_ids``), so a model trained here reads its inputs as diffusers feeds them at inference.
"""

from __future__ import annotations

import torch

POSITION_AXES = 3  # (unused axis, row, column) for image tokens; all zero for text tokens


def pack_latents(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, (H/patch)*(W/patch), C*patch*patch]``, rows of patches in reading order."""
    batch, channels, height, width = latents.shape
    if height % patch or width % patch:
        raise ValueError(f"latent size {height}x{width} is not a multiple of the {patch}x{patch} patch")
    patches = latents.reshape(batch, channels, height // patch, patch, width // patch, patch)
    patches = patches.permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // patch) * (width // patch), channels * patch * patch)


def unpack_latents(tokens: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents` for a latent of ``height`` x ``width`` latent pixels."""
    batch, _, features = tokens.shape
    channels = features // (patch * patch)
    patches = tokens.reshape(batch, height // patch, width // patch, channels, patch, patch)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)


def image_position_ids(height: int, width: int, patch: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """``[(H/patch)*(W/patch), 3]``: each packed token's ``(0, row, column)`` in patch units."""
    rows, columns = height // patch, width // patch
    ids = torch.zeros(rows, columns, POSITION_AXES)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(columns)[None, :]
    return ids.reshape(rows * columns, POSITION_AXES).to(device=device, dtype=dtype)


def text_position_ids(length: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """``[length, 3]`` zeros: text tokens carry no position of their own (T5 already encoded their order)."""
    return torch.zeros(length, POSITION_AXES, device=device, dtype=dtype)
