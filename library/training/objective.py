"""The training objective a family's record calls for: DDPM noise prediction or flow matching.

The loop, validation and every weights strategy draw timesteps and compute the loss through this one interface,
so no training code asks which family it trains.
"""

from __future__ import annotations

from typing import Protocol

import torch

from library.config import FurnaceConfig
from library.models.loader import BaseModel
from library.models.text_encoding import TextConditioning
from library.training.diffusion_step import DiffusionObjective, LossSettings
from library.training.exceptions import TrainingSetupError


class Objective(Protocol):
    """Timesteps for a batch (training: drawn from the global RNG; validation: fixed) and the per-sample loss."""

    def timesteps(self, latents: torch.Tensor) -> torch.Tensor: ...

    def fixed_timesteps(self, batch_size: int, timestep: int, device: torch.device) -> torch.Tensor: ...

    def loss(
        self,
        denoiser: torch.nn.Module,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: TextConditioning,
        time_ids: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def build_objective(config: FurnaceConfig, model: BaseModel) -> Objective:
    """The objective of ``model``'s family with the run's loss options."""
    training = config.training
    settings = LossSettings(training.loss_type, training.huber_c, training.min_snr_gamma)
    if model.family.prediction_type != "flow_matching":
        return DiffusionObjective(model.noise_scheduler, settings)
    if training.min_snr_gamma:
        raise TrainingSetupError(
            f"training.min_snr_gamma: min-SNR weighting is for DDPM models; a {model.family.title} model trains by "
            "flow matching: unset it (flow_matching.weighting_scheme weights its loss)"
        )
    from library.training.flow_step import FlowMatchingObjective

    return FlowMatchingObjective(model.family, config.flow_matching, settings)
