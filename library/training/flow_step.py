"""One flow-matching loss evaluation for a DiT family: latents -> noisy input -> packed tokens -> transformer -> loss.

The family record drives every family-specific part: the patch size of the packed latents, whether the transformer
takes a guidance input, and (by its ``denoiser_class``) how the transformer is called. FluxTransformer2DModel is
called as diffusers' FluxPipeline calls it: ``timestep`` is sigma in (0, 1) (the model multiplies it by 1000
itself), ``guidance`` the raw guidance value, ``img_ids`` / ``txt_ids`` 2-D position ids.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from library.config.sections_flow import FlowMatchingSection
from library.models.families import ModelFamily
from library.models.latent_packing import image_position_ids, pack_latents, text_position_ids, unpack_latents
from library.models.text_encoding import TextConditioning
from library.training.diffusion_step import LossSettings
from library.training.flow_matching import (
    interpret_prediction,
    noisy_input,
    sample_sigmas,
    velocity_target,
)
from library.training.loss import per_sample_loss

TransformerCall = Callable[..., torch.Tensor]


def flux_prediction(
    transformer: torch.nn.Module,
    family: ModelFamily,
    noisy: torch.Tensor,
    sigmas: torch.Tensor,
    conditioning: TextConditioning,
    guidance_scale: float,
) -> torch.Tensor:
    """The FLUX.1 transformer's velocity for ``noisy`` latents ``[B, C, H, W]``, unpacked to their shape."""
    batch, _, height, width = noisy.shape
    patch, device = family.latent_patch_size, noisy.device
    dtype = conditioning.hidden_states.dtype
    guidance = torch.full((batch,), guidance_scale, device=device) if family.guidance_embedded else None
    output = transformer(
        hidden_states=pack_latents(noisy, patch),
        encoder_hidden_states=conditioning.hidden_states,
        pooled_projections=conditioning.pooled,
        timestep=sigmas.to(device),
        img_ids=image_position_ids(height, width, patch, device, dtype),
        txt_ids=text_position_ids(conditioning.hidden_states.shape[1], device, dtype),
        guidance=guidance,
        return_dict=False,
    )[0]
    return unpack_latents(output, height, width, patch)


TRANSFORMER_CALLS: dict[str, TransformerCall] = {"FluxTransformer2DModel": flux_prediction}


class FlowMatchingObjective:
    """Sigmas drawn as ``flow_matching.timestep_sampling`` says; loss against the velocity target."""

    def __init__(self, family: ModelFamily, settings: FlowMatchingSection, loss: LossSettings) -> None:
        if family.denoiser_class not in TRANSFORMER_CALLS:
            raise ValueError(f"no flow-matching call for a {family.denoiser_class} denoiser ({family.title})")
        self.family, self.settings, self.loss_settings = family, settings, loss
        self.call = TRANSFORMER_CALLS[family.denoiser_class]

    def timesteps(self, latents: torch.Tensor) -> torch.Tensor:
        """Each sample's sigma, drawn from the global RNG on the CPU."""
        height, width = latents.shape[-2:]
        tokens = (height // self.family.latent_patch_size) * (width // self.family.latent_patch_size)
        sigmas = sample_sigmas(self.settings, latents.shape[0], tokens, self.family.scheduler_config)
        return sigmas.to(latents.device)

    def fixed_timesteps(self, batch_size: int, timestep: int, device: torch.device) -> torch.Tensor:
        """Validation's fixed noise level for a timestep of the 1000-step grid: sigma = timestep / 1000."""
        return torch.full((batch_size,), timestep / 1000, device=device)

    def loss(
        self,
        transformer: torch.nn.Module,
        latents: torch.Tensor,
        noise: torch.Tensor,
        sigmas: torch.Tensor,
        conditioning: TextConditioning,
        time_ids: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-sample loss ``[batch]`` with gradients (``time_ids`` is SDXL's and unused here)."""
        noisy = noisy_input(latents, noise, sigmas)
        prediction = self.call(transformer, self.family, noisy, sigmas, conditioning, self.settings.guidance_scale)
        prediction, weights = interpret_prediction(self.settings, prediction, noisy, sigmas)
        target = velocity_target(latents, noise)
        settings = self.loss_settings
        return per_sample_loss(prediction, target, settings.loss_type, settings.huber_c, weights, masks)
