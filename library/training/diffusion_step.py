"""One denoising-loss evaluation: latents + conditioning -> noised latents -> UNet -> weighted loss.

Shared by training (random noise and timesteps) and validation (fixed noise and timesteps), and by the LoRA and
DreamBooth trainers, so both compute exactly the same objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from library.models.text_encoding import TextConditioning
from library.training.loss import min_snr_weights, per_sample_loss, prediction_target
from library.training.noise import sample_timesteps


@dataclass(frozen=True)
class LossSettings:
    """The ``training.*`` options that shape the loss."""

    loss_type: str = "l2"
    huber_c: float = 0.1
    min_snr_gamma: float | None = None


def sdxl_time_ids(
    original_sizes: list[tuple[int, int]],
    crop_top_lefts: list[tuple[int, int]],
    target_sizes: list[tuple[int, int]],
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """SDXL's micro-conditioning per sample: original (h, w), crop (top, left), target (h, w)."""
    rows = [
        [*original, *crop, *target]
        for original, crop, target in zip(original_sizes, crop_top_lefts, target_sizes)
    ]
    return torch.tensor(rows, device=device, dtype=dtype)


def unet_prediction(
    unet: torch.nn.Module,
    noisy_latents: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: TextConditioning,
    time_ids: torch.Tensor | None,
) -> torch.Tensor:
    """The UNet's output; SDXL also gets the pooled text embedding and the time ids."""
    added = None
    if time_ids is not None:
        added = {"text_embeds": conditioning.pooled, "time_ids": time_ids}
    return unet(
        noisy_latents, timesteps, encoder_hidden_states=conditioning.hidden_states, added_cond_kwargs=added
    ).sample


def denoising_loss(
    unet: torch.nn.Module,
    noise_scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: TextConditioning,
    settings: LossSettings,
    time_ids: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """The diffusion loss of each sample of one batch (``[batch]``, with gradients), weighted per pixel by
    ``masks`` (``[batch, 1, h, w]``, masked loss) when given."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    prediction = unet_prediction(unet, noisy, timesteps, conditioning, time_ids)
    target = prediction_target(noise_scheduler, latents, noise, timesteps)
    snr = None
    if settings.min_snr_gamma:
        is_v = noise_scheduler.config.prediction_type == "v_prediction"
        snr = min_snr_weights(noise_scheduler, timesteps, settings.min_snr_gamma, is_v)
    return per_sample_loss(prediction, target, settings.loss_type, settings.huber_c, snr, masks)


class DiffusionObjective:
    """The DDPM objective of the Stable Diffusion families: integer timesteps, noise or velocity target."""

    def __init__(self, noise_scheduler, settings: LossSettings) -> None:
        self.noise_scheduler, self.settings = noise_scheduler, settings

    def timesteps(self, latents: torch.Tensor) -> torch.Tensor:
        """Uniform integer timesteps over the training schedule, one per sample."""
        return sample_timesteps(latents.shape[0], self.noise_scheduler.config.num_train_timesteps, latents.device)

    def fixed_timesteps(self, batch_size: int, timestep: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch_size,), timestep, device=device, dtype=torch.long)

    def loss(self, unet, latents, noise, timesteps, conditioning, time_ids=None, masks=None) -> torch.Tensor:
        return denoising_loss(
            unet, self.noise_scheduler, latents, noise, timesteps, conditioning, self.settings, time_ids, masks
        )
