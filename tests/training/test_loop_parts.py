"""The loop's building blocks: optimizer/schedule registry, targets and loss weights, noise, file retention."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from library.config import ConfigError
from library.models.families import SD1, SD2_V
from library.training.loss import element_loss, min_snr_weights, per_sample_loss, prediction_target, weighted_mean
from library.training.noise import sample_noise
from library.training.optimizers import OPTIMIZERS, SCHEDULERS, build_lr_scheduler, build_optimizer


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_reduces_a_quadratic(name):
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(16, 16))
    lr = 1.0 if name == "Prodigy" else 1e-2
    optimizer = build_optimizer(name, [{"params": [weight], "lr": lr}], lr, weight_decay=0.0, betas=(0.9, 0.99),
                                eps=1e-8, momentum=0.9 if name == "SGD" else None)
    start = float((weight**2).sum())
    for _ in range(30):
        (weight**2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert float((weight**2).sum()) < start


def test_unknown_optimizer_option_is_named():
    weight = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ConfigError, match="optimizer.args: AdamW has no option 'nesterov'"):
        build_optimizer("AdamW", [{"params": [weight]}], 1e-3, extra_args={"nesterov": True})


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedules_warm_up_and_end_where_expected(name):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    warmup = 0 if name == "constant" else 10
    scheduler = build_lr_scheduler(name, optimizer, total_steps=100, warmup_steps=warmup, num_cycles=2, power=2.0)
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    if warmup:
        assert rates[0] == 0.0 and rates[warmup] == pytest.approx(1.0)
    if name.startswith("constant"):
        assert rates[-1] == pytest.approx(1.0)
    else:
        assert rates[-1] < 0.2
    if name == "cosine_with_restarts":
        assert max(rates[60:]) > 0.9  # the second cycle restarts near the peak


def _schedule(family) -> DDPMScheduler:
    return DDPMScheduler(**dict(family.scheduler_config))


def test_prediction_targets_per_family():
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 900])
    assert torch.equal(prediction_target(_schedule(SD1), latents, noise, timesteps), noise)
    velocity = prediction_target(_schedule(SD2_V), latents, noise, timesteps)
    alphas = _schedule(SD2_V).alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    assert torch.allclose(velocity, alphas.sqrt() * noise - (1 - alphas).sqrt() * latents, atol=1e-6)


def test_min_snr_weights_cap_easy_timesteps():
    scheduler = _schedule(SD1)
    timesteps = torch.tensor([1, 500, 999])
    weights = min_snr_weights(scheduler, timesteps, gamma=5.0, v_prediction=False)
    snr = scheduler.alphas_cumprod[timesteps] / (1 - scheduler.alphas_cumprod[timesteps])
    assert torch.allclose(weights, torch.clamp(snr, max=5.0) / snr)
    assert weights[0] < 0.01 and weights[2] == pytest.approx(1.0)
    v_weights = min_snr_weights(scheduler, timesteps, gamma=5.0, v_prediction=True)
    assert torch.allclose(v_weights, torch.clamp(snr, max=5.0) / (snr + 1))


def test_losses_and_sample_weights():
    prediction, target = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    assert torch.equal(element_loss(prediction, target, "l2", 0.1), torch.full((2, 1, 2, 2), 4.0))
    huber = element_loss(prediction, target, "huber", 0.1)
    assert torch.allclose(huber, torch.full_like(huber, 2 * 0.1 * (math.sqrt(4 + 0.01) - 0.1)))
    per_sample = per_sample_loss(prediction, target)
    assert torch.equal(per_sample, torch.tensor([4.0, 4.0]))
    assert float(weighted_mean(per_sample, torch.tensor([1.0, 0.5]))) == pytest.approx(3.0)


def test_noise_offset_and_pyramid_noise_statistics():
    torch.manual_seed(0)
    latents = torch.zeros(64, 4, 32, 32)
    plain = sample_noise(latents)
    offset = sample_noise(latents, noise_offset=0.5)
    pyramid = sample_noise(latents, multires_iterations=6, multires_discount=0.3)
    channel_means = lambda noise: noise.mean(dim=(2, 3)).std()  # noqa: E731
    assert channel_means(offset) > 3 * channel_means(plain)
    assert pyramid.std() == pytest.approx(1.0, abs=0.01)
    assert channel_means(pyramid) > channel_means(plain)
