"""The diffusion training loss: prediction target, element loss, loss masks, per-sample weights (prior, min-SNR).

Masked loss follows sd-scripts: the per-element loss is multiplied by the mask (area-averaged to the latent grid)
*before* the mean over all latent elements, which is not renormalised by the mask's area. So every unmasked latent
cell weighs the same in every image, and an image that is half masked contributes half the loss of a whole one
(its gradient is not scaled up to make up for the hidden half). Min-SNR and the prior loss weight then scale the
per-sample loss as usual; class images and images without a mask weigh 1 everywhere.
"""

from __future__ import annotations

from typing import Literal

import torch

from library.data.masks import reduce_mask

LossType = Literal["l2", "huber", "smooth_l1"]


def prediction_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet must predict: the noise (epsilon models) or the velocity (v-prediction models)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def element_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: LossType, huber_c: float) -> torch.Tensor:
    """Per-element loss. Huber variants are the pseudo-Huber form, smooth at zero, scaled to match L2 near it."""
    difference = prediction.float() - target.float()
    if loss_type == "l2":
        return difference**2
    smooth = torch.sqrt(difference**2 + huber_c**2) - huber_c
    if loss_type == "huber":
        return 2 * huber_c * smooth
    if loss_type == "smooth_l1":
        return 2 * smooth
    raise ValueError(f"unknown loss type {loss_type!r}")


def min_snr_weights(
    scheduler, timesteps: torch.Tensor, gamma: float, v_prediction: bool
) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023): min(SNR, gamma)/SNR, or /(SNR+1) for v-prediction."""
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if v_prediction else clipped / snr


def per_sample_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    loss_type: LossType = "l2",
    huber_c: float = 0.1,
    snr_weights: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss per sample ``[batch]``: the mean over latent pixels of the loss times ``masks`` ``[batch, 1, H, W]``
    (any size: area-averaged to the latents'; see the module docstring), times the min-SNR weight when given.
    Per-sample weights (prior loss weight) are the caller's, so instance and prior terms can be reported apart."""
    elements = element_loss(prediction, target, loss_type, huber_c)
    if masks is not None:
        elements = elements * reduce_mask(masks.to(elements.device, elements.dtype), elements.shape[-2:])
    per_sample = elements.mean(dim=(1, 2, 3))
    if snr_weights is not None:
        per_sample = per_sample * snr_weights.to(per_sample.dtype)
    return per_sample


def weighted_mean(per_sample: torch.Tensor, sample_weights: torch.Tensor) -> torch.Tensor:
    """The batch loss: per-sample losses times their weights, averaged."""
    return (per_sample * sample_weights.to(per_sample.device, per_sample.dtype)).mean()
