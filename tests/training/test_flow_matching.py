"""Flow matching: the sigma samplers' distributions (sd-scripts' names), latent packing against FluxPipeline's own
helpers, and the transformer call against the conventions FluxPipeline uses at inference."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FluxPipeline

from library.config import loads_config
from library.models.families import FLUX1_DEV, FLUX1_SCHNELL
from library.models.latent_packing import image_position_ids, pack_latents, text_position_ids, unpack_latents
from library.models.text_encoding import TextConditioning
from library.models.tiny import build_components, tiny_configs
from library.training.flow_matching import interpret_prediction, noisy_input, sample_sigmas, velocity_target
from library.training.flow_step import flux_prediction

DRAWS = 40_000


def _settings(*overrides: str):
    base = 'pretrained_model_name_or_path = "x"\ntrain_data_dir = "y"\n'
    return loads_config(base, overrides=list(overrides)).flow_matching


def _draw(settings, image_tokens: int = 16, schedule=FLUX1_DEV.scheduler_config) -> torch.Tensor:
    torch.manual_seed(0)
    return sample_sigmas(settings, DRAWS, image_tokens, schedule)


def _logit(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.log(sigmas / (1 - sigmas))


def test_uniform_sigmas_are_uniform_on_the_unit_interval():
    sigmas = _draw(_settings("--timestep_sampling", "uniform"))
    assert 0 <= sigmas.min() and sigmas.max() < 1
    assert sigmas.mean() == pytest.approx(0.5, abs=0.01)
    assert sigmas.std() == pytest.approx(1 / math.sqrt(12), abs=0.01)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_sigmoid_sigmas_have_a_normal_logit_with_the_sigmoid_scale(scale):
    sigmas = _draw(_settings("--timestep_sampling", "sigmoid", "--sigmoid_scale", str(scale)))
    logits = _logit(sigmas.double())
    assert logits.mean() == pytest.approx(0.0, abs=0.05)
    assert logits.std() == pytest.approx(scale, rel=0.03)


def test_shift_moves_the_median_to_shift_over_shift_plus_one_and_unshifts_to_the_sigmoid_draw():
    shift = 3.0
    sigmas = _draw(_settings("--timestep_sampling", "shift", "--discrete_flow_shift", str(shift))).double()
    assert sigmas.median() == pytest.approx(shift / (shift + 1), abs=0.01)
    unshifted = sigmas / (shift - (shift - 1) * sigmas)  # the inverse of s -> shift*s / (1 + (shift-1)*s)
    assert _logit(unshifted).std() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("image_tokens", [16, 4096])
def test_flux_shift_depends_on_the_image_size_as_flux1_dev_schedules_it(image_tokens):
    """mu rises linearly from 0.5 at 256 tokens to 1.15 at 4096 (FLUX.1-dev); the median sigma is sigmoid(mu)."""
    mu = 0.5 + (1.15 - 0.5) * (image_tokens - 256) / (4096 - 256)
    for schedule in (FLUX1_DEV.scheduler_config, FLUX1_SCHNELL.scheduler_config):
        sigmas = _draw(_settings("--timestep_sampling", "flux_shift"), image_tokens, schedule)
        assert sigmas.median() == pytest.approx(1 / (1 + math.exp(-mu)), abs=0.01)


def test_sigma_sampling_draws_from_the_shifted_1000_step_schedule():
    sigmas = _draw(_settings("--timestep_sampling", "sigma", "--discrete_flow_shift", "1"))
    grid = torch.arange(1, 1001) / 1000
    assert torch.isin(sigmas, grid.float()).all()
    assert sigmas.mean() == pytest.approx(0.5, abs=0.01)
    shifted = _draw(_settings("--timestep_sampling", "sigma", "--discrete_flow_shift", "3"))
    assert shifted.median() == pytest.approx(0.75, abs=0.01)


def test_logit_normal_weighting_scheme_shapes_the_sigma_draw():
    """A positive logit mean puts the draw at later (less noisy) points of the schedule, which runs from noise."""
    settings = _settings("--timestep_sampling", "sigma", "--discrete_flow_shift", "1", "--weighting_scheme",
                         "logit_normal", "--logit_mean", "1.0", "--logit_std", "0.5", "--model_prediction_type", "raw")
    sigmas = _draw(settings)
    assert sigmas.median() == pytest.approx(1 - 1 / (1 + math.exp(-1.0)), abs=0.01)


def test_mode_weighting_scheme_favours_the_middle_of_the_schedule():
    middle = {}
    for scale in ("0", "1.29"):
        sigmas = _draw(_settings("--timestep_sampling", "sigma", "--discrete_flow_shift", "1", "--weighting_scheme",
                                 "mode", "--mode_scale", scale, "--model_prediction_type", "raw"))
        middle[scale] = float(((sigmas > 1 / 3) & (sigmas < 2 / 3)).float().mean())
    assert middle["0"] == pytest.approx(1 / 3, abs=0.01)
    assert middle["1.29"] > 0.55


def test_model_prediction_types_and_loss_weights():
    torch.manual_seed(1)
    latents, noise = torch.randn(3, 16, 4, 4), torch.randn(3, 16, 4, 4)
    sigmas = torch.tensor([0.2, 0.5, 0.9])
    noisy = noisy_input(latents, noise, sigmas)
    assert torch.allclose(noisy[1], 0.5 * latents[1] + 0.5 * noise[1])
    velocity = velocity_target(latents, noise)
    raw, weights = interpret_prediction(_settings("--model_prediction_type", "raw"), velocity, noisy, sigmas)
    assert raw is velocity and weights is None
    additive, _ = interpret_prediction(_settings("--model_prediction_type", "additive"), velocity, noisy, sigmas)
    assert torch.allclose(additive, velocity + noisy)
    settings = _settings("--model_prediction_type", "sigma_scaled", "--weighting_scheme", "cosmap")
    scaled, weights = interpret_prediction(settings, velocity, noisy, sigmas)
    assert torch.allclose(scaled, latents, atol=1e-5)  # the exact velocity, sigma-scaled, is the clean latent
    assert torch.allclose(weights, 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas**2)))


def test_packing_round_trips_exactly_and_matches_flux_pipeline():
    torch.manual_seed(2)
    latents = torch.randn(2, 16, 8, 6)
    tokens = pack_latents(latents, 2)
    assert torch.equal(tokens, FluxPipeline._pack_latents(latents, 2, 16, 8, 6))
    assert torch.equal(unpack_latents(tokens, 8, 6, 2), latents)
    assert torch.equal(FluxPipeline._unpack_latents(tokens, 8 * 8, 6 * 8, 8), latents)
    ids = image_position_ids(8, 6, 2, "cpu", torch.float32)
    assert torch.equal(ids, FluxPipeline._prepare_latent_image_ids(2, 4, 3, "cpu", torch.float32))
    assert ids.shape == (tokens.shape[1], 3)
    assert torch.equal(text_position_ids(7, "cpu", torch.float32), torch.zeros(7, 3))


@pytest.mark.parametrize("family", [FLUX1_DEV, FLUX1_SCHNELL], ids=lambda family: family.name)
def test_transformer_call_follows_flux_pipeline_conventions(family):
    """Our call equals the transformer called as FluxPipeline calls it (timestep = t / 1000 with t = 1000 sigma,
    raw guidance only for dev, packed tokens and 2-D ids), unpacked as FluxPipeline unpacks."""
    transformer = build_components(family, tiny_configs(family), seed=0).unet.eval()
    torch.manual_seed(3)
    noisy, sigmas = torch.randn(2, 16, 8, 8), torch.tensor([0.3, 0.8])
    width = transformer.config.joint_attention_dim
    conditioning = TextConditioning(torch.randn(2, 5, width), torch.randn(2, transformer.config.pooled_projection_dim))
    with torch.no_grad():
        ours = flux_prediction(transformer, family, noisy, sigmas, conditioning, guidance_scale=3.5)
        guidance = torch.full([2], 3.5) if transformer.config.guidance_embeds else None
        theirs = transformer(
            hidden_states=FluxPipeline._pack_latents(noisy, 2, 16, 8, 8), timestep=(sigmas * 1000) / 1000,
            guidance=guidance, pooled_projections=conditioning.pooled, encoder_hidden_states=conditioning.hidden_states,
            txt_ids=torch.zeros(5, 3), img_ids=FluxPipeline._prepare_latent_image_ids(2, 4, 4, "cpu", torch.float32),
            return_dict=False,
        )[0]
    assert transformer.config.guidance_embeds == family.guidance_embedded
    assert torch.equal(ours, FluxPipeline._unpack_latents(theirs, 64, 64, 8))
