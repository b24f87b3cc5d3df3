"""Noise for the diffusion forward process: plain Gaussian plus the offset and multi-resolution variants.

Offset noise (a per-channel constant) lets a model learn very dark or bright images; multi-resolution ("pyramid")
noise adds low-frequency components for the same reason. Both draw from the global torch RNG so that resume, which
restores that RNG, reproduces them exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_noise(
    latents: torch.Tensor,
    noise_offset: float = 0.0,
    multires_iterations: int = 0,
    multires_discount: float = 0.3,
) -> torch.Tensor:
    """Noise shaped like ``latents`` with the configured offset and pyramid components."""
    noise = torch.randn_like(latents)
    if noise_offset:
        batch, channels = latents.shape[:2]
        noise = noise + noise_offset * torch.randn(
            batch, channels, 1, 1, device=latents.device, dtype=latents.dtype
        )
    if multires_iterations:
        noise = _add_pyramid_noise(noise, multires_iterations, multires_discount)
    return noise


def _add_pyramid_noise(noise: torch.Tensor, iterations: int, discount: float) -> torch.Tensor:
    """Add ever coarser noise, upsampled to full size, weighted by ``discount ** level``; renormalise."""
    batch, channels, height, width = noise.shape
    for level in range(1, iterations + 1):
        factor = float(torch.rand(()) * 2 + 2) ** level
        coarse_h, coarse_w = max(1, int(height / factor)), max(1, int(width / factor))
        coarse = torch.randn(batch, channels, coarse_h, coarse_w, device=noise.device, dtype=noise.dtype)
        noise = noise + F.interpolate(coarse, size=(height, width), mode="bilinear") * discount**level
        if coarse_h == 1 or coarse_w == 1:
            break
    return noise / noise.std()


def sample_timesteps(batch_size: int, num_train_timesteps: int, device: torch.device,
                     min_timestep: int = 0, max_timestep: int | None = None) -> torch.Tensor:
    """Uniform integer timesteps in ``[min_timestep, max_timestep)``."""
    upper = num_train_timesteps if max_timestep is None else max_timestep
    return torch.randint(min_timestep, upper, (batch_size,), device=device).long()
