"""Sampler registry: every sd-scripts name builds on the training schedule and keeps its prediction type."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers import DDPMScheduler

from library.models.families import SD1, SD2_V
from library.sampling.samplers import build_scheduler, canonical_sampler, sampler_names

# diffusers' k-diffusion schedulers feed torch tensors to numpy, which warns thousands of times per run, and
# diffusers announces the future removal of the original "dpmsolver" algorithm that sd-scripts names.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`algorithm_types dpmsolver:FutureWarning"),
]

SD_SCRIPTS_NAMES = (
    "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++", "dpmsingle",
    "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
)
EXPECTED_CLASSES = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm_2": "KDPM2DiscreteScheduler",
    "dpm_2_a": "KDPM2AncestralDiscreteScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "dpmsolver++": "DPMSolverMultistepScheduler",
    "dpmsingle": "DPMSolverSinglestepScheduler",
}


def test_registry_holds_exactly_the_sd_scripts_names():
    assert set(sampler_names()) == set(SD_SCRIPTS_NAMES)


def _denoise(scheduler, steps: int) -> torch.Tensor:
    """Run the scheduler's loop on a fixed toy model output; returns the final sample."""
    generator = torch.Generator().manual_seed(0)
    scheduler.set_timesteps(steps)
    sample = torch.randn(1, 4, 8, 8, generator=generator) * scheduler.init_noise_sigma
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    for timestep in scheduler.timesteps:
        model_input = scheduler.scale_model_input(sample, timestep)
        model_output = 0.1 * model_input + 0.05
        extra = {"generator": generator} if takes_generator else {}
        sample = scheduler.step(model_output, timestep, sample, **extra).prev_sample
    return sample


@pytest.mark.parametrize("family", [SD1, SD2_V], ids=lambda family: family.prediction_type)
@pytest.mark.parametrize("name", SD_SCRIPTS_NAMES)
def test_every_sampler_builds_on_the_training_schedule(name, family):
    training = DDPMScheduler(**dict(family.scheduler_config))
    scheduler = build_scheduler(name, training.config)
    assert type(scheduler).__name__ == EXPECTED_CLASSES[canonical_sampler(name)]
    assert scheduler.config.prediction_type == family.prediction_type
    assert scheduler.config.num_train_timesteps == training.config.num_train_timesteps
    assert torch.allclose(scheduler.alphas_cumprod, training.alphas_cumprod)
    result = _denoise(scheduler, steps=3)
    assert torch.isfinite(result).all()


@pytest.mark.parametrize("name", ["ddim", "euler", "dpmsolver++"])
def test_prediction_type_changes_the_denoising(name):
    epsilon = _denoise(build_scheduler(name, SD1.scheduler_config), steps=3)
    velocity = _denoise(build_scheduler(name, SD2_V.scheduler_config), steps=3)
    assert not torch.allclose(epsilon, velocity)


def test_dpmsolver_variants_differ_in_algorithm():
    assert build_scheduler("dpmsolver", SD1.scheduler_config).config.algorithm_type == "dpmsolver"
    assert build_scheduler("dpmsolver++", SD1.scheduler_config).config.algorithm_type == "dpmsolver++"


def test_each_build_is_a_fresh_scheduler():
    first = build_scheduler("dpmsolver++", SD1.scheduler_config)
    assert build_scheduler("dpmsolver++", SD1.scheduler_config) is not first


def test_aliases_and_case():
    assert canonical_sampler("K_Euler_A") == "euler_a"
    assert canonical_sampler(" DDIM ") == "ddim"


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown sampler 'ddpm'; expected one of ddim, pndm, .*k_dpm_2_a"):
        build_scheduler("ddpm", SD1.scheduler_config)
