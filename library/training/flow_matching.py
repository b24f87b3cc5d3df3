"""Flow matching: noise levels (sigmas) as sd-scripts draws them, the noisy input, the velocity target, loss weights.

A flow-matching model sees ``x_sigma = (1 - sigma) * latents + sigma * noise`` and predicts the velocity
``noise - latents``; ``sigma`` in (0, 1) is also its timestep input. Which sigmas training visits shapes what the
model gets good at, so the draw is configurable with sd-scripts' names (``flow_matching.*``,
``config/sections_flow.py``). Every draw uses the global torch RNG on the CPU, which resume restores, so a resumed
run draws the same sigmas on any device. The SD3-paper density and weighting functions are diffusers' own.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from library.config.sections_flow import FlowMatchingSection

NUM_TRAIN_TIMESTEPS = 1000  # the grid of timestep_sampling "sigma" (the training schedule's 1000 steps)
# FLUX.1-dev's resolution-dependent shift: mu grows linearly from base_shift at 256 tokens to max_shift at 4096
_SHIFT_DEFAULTS = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The constant shift towards noise: ``shift * s / (1 + (shift - 1) * s)`` (1 = unchanged)."""
    return sigmas * shift / (1 + (shift - 1) * sigmas)


def resolution_shift(image_tokens: int, schedule: Mapping[str, object]) -> float:
    """FLUX.1's ``mu`` for an image of ``image_tokens`` packed tokens, from the family's scheduler settings (the
    dev values where the schedule has none, as sd-scripts uses them for every FLUX.1)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    values = {key: schedule.get(key, default) for key, default in _SHIFT_DEFAULTS.items()}
    return calculate_shift(image_tokens, values["base_image_seq_len"], values["max_image_seq_len"],
                           values["base_shift"], values["max_shift"])


def exponential_shift(sigmas: torch.Tensor, mu: float) -> torch.Tensor:
    """The resolution-dependent shift: ``e^mu / (e^mu + 1/s - 1)``."""
    scale = torch.exp(torch.tensor(mu, dtype=sigmas.dtype))
    return scale / (scale + (1 / sigmas - 1))


def schedule_sigmas(shift: float) -> torch.Tensor:
    """The 1000 sigmas of the shifted training schedule, from most to least noisy (diffusers' flow-matching
    scheduler with ``shift``, as sd-scripts builds it)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    return scheduler.sigmas.float()


def sample_sigmas(
    settings: FlowMatchingSection, batch_size: int, image_tokens: int, schedule: Mapping[str, object]
) -> torch.Tensor:
    """``[batch_size]`` noise levels in (0, 1] drawn as ``settings.timestep_sampling`` says (CPU, float32)."""
    kind = settings.timestep_sampling
    if kind == "uniform":
        return torch.rand(batch_size)
    if kind == "sigma":
        from diffusers.training_utils import compute_density_for_timestep_sampling

        density = compute_density_for_timestep_sampling(
            settings.weighting_scheme, batch_size, settings.logit_mean, settings.logit_std, settings.mode_scale
        )
        indices = (density * NUM_TRAIN_TIMESTEPS).long().clamp(0, NUM_TRAIN_TIMESTEPS - 1)
        return schedule_sigmas(settings.discrete_flow_shift)[indices]
    sigmas = torch.sigmoid(settings.sigmoid_scale * torch.randn(batch_size))
    if kind == "shift":
        return shift_sigmas(sigmas, settings.discrete_flow_shift)
    if kind == "flux_shift":
        return exponential_shift(sigmas, resolution_shift(image_tokens, schedule))
    return sigmas  # "sigmoid"


def noisy_input(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """``(1 - sigma) * latents + sigma * noise`` per sample."""
    sigma = _per_sample(sigmas, latents)
    return (1 - sigma) * latents + sigma * noise


def velocity_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What a flow-matching model predicts: the direction from the image to the noise."""
    return noise - latents


def interpret_prediction(
    settings: FlowMatchingSection, prediction: torch.Tensor, noisy: torch.Tensor, sigmas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prediction the loss compares with the target, and per-sample loss weights (None = all 1), by
    ``model_prediction_type``: raw; additive (plus the noisy input); sigma_scaled (noisy input minus sigma times
    the output, weighted by ``weighting_scheme``)."""
    kind = settings.model_prediction_type
    if kind == "raw":
        return prediction, None
    if kind == "additive":
        return prediction + noisy, None
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    scaled = noisy - _per_sample(sigmas, prediction) * prediction
    return scaled, compute_loss_weighting_for_sd3(settings.weighting_scheme, sigmas.float())


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))
