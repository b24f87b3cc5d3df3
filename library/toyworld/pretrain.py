"""Pretraining the toy-world base model: the VAE first, then the UNet and text encoder together.

The VAE is the world's image codec, like SD's VAE is one for photos: it learns to reconstruct scenes in every colour
of the world, the held-out one included, and never sees a caption. The UNet and text
encoder learn the world's language from scenes in the pretraining colours only, with Stable Diffusion's own
training objective (epsilon prediction on SD1's noise schedule, captions encoded the way Furnace's trainers encode
them, 10 % empty captions for classifier-free guidance); the weights kept are an exponential moving average.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from library.models.families import ModelFamily
from library.models.text_encoding import encode_captions
from library.toyworld.world import COLOURS, PRETRAINING_COLOURS, pretraining_caption, random_scene, render

logger = logging.getLogger(__name__)

COLOUR_JITTER = 12


@dataclass(frozen=True)
class VaeSettings:
    steps: int = 1500
    batch_size: int = 16
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6


@dataclass(frozen=True)
class DiffusionSettings:
    steps: int = 6000
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 200
    scenes: int = 20000
    empty_caption_share: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999


def to_tensor(images) -> torch.Tensor:
    """PIL images -> a ``[batch, 3, H, W]`` tensor in [-1, 1], as the VAE sees pixels."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def codec_images(rng: random.Random, count: int) -> torch.Tensor:
    """The VAE's training data: scenes in every named colour, each shade jittered a little."""
    images = []
    for _ in range(count):
        scene = random_scene(rng, tuple(COLOURS))
        rgb = tuple(min(255, max(0, value + rng.randint(-COLOUR_JITTER, COLOUR_JITTER)))
                    for value in COLOURS[scene.colour])
        images.append(render(scene, rgb=rgb))
    return to_tensor(images)


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then a cosine decay to a tenth of the peak rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_vae(vae: torch.nn.Module, settings: VaeSettings, seed: int) -> float:
    """Train ``vae`` in place on :func:`codec_images`; returns the final reconstruction error (mean squared)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine_lr(step, settings.steps, 50))
    vae.train()
    error = float("nan")
    bar = tqdm(range(settings.steps), desc="VAE", unit="step")
    for _ in bar:
        pixels = codec_images(rng, settings.batch_size)
        posterior = vae.encode(pixels).latent_dist
        decoded = vae.decode(posterior.sample()).sample
        reconstruction = F.mse_loss(decoded, pixels) + F.l1_loss(decoded, pixels)
        loss = reconstruction + settings.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        error = F.mse_loss(decoded.detach(), pixels).item()
        bar.set_postfix(mse=f"{error:.4f}")
    vae.eval()
    return error


@torch.no_grad()
def calibrate_latent_scale(vae: torch.nn.Module, scaling_factor: float, seed: int, count: int = 256) -> float:
    """Rescale the latent space so that latents times the family's ``scaling_factor`` have unit deviation.

    SD1's scaling factor is a constant of the family, not of a VAE, so the VAE is fitted to it: the encoder's mean
    channels are multiplied by k (its log-variance shifted by 2 log k) and the decoder's first layer divided by k,
    which leaves every reconstruction unchanged. Returns k.
    """
    pixels = codec_images(random.Random(seed), count)
    deviation = vae.encode(pixels).latent_dist.mean.std().item()
    factor = 1.0 / (scaling_factor * deviation)
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= factor
    vae.quant_conv.bias[:channels] *= factor
    vae.quant_conv.bias[channels:] += 2 * math.log(factor)
    vae.post_quant_conv.weight /= factor
    return factor


@dataclass
class EncodedScenes:
    """The diffusion stage's training set: scenes and their latent distributions (mean and deviation)."""

    scenes: list
    means: torch.Tensor
    deviations: torch.Tensor


@torch.no_grad()
def encode_scenes(vae: torch.nn.Module, count: int, seed: int, batch_size: int = 64) -> EncodedScenes:
    rng = random.Random(seed)
    scenes = [random_scene(rng, PRETRAINING_COLOURS) for _ in range(count)]
    means, deviations = [], []
    for start in tqdm(range(0, count, batch_size), desc="encoding scenes", unit="batch"):
        posterior = vae.encode(to_tensor([render(scene) for scene in scenes[start:start + batch_size]])).latent_dist
        means.append(posterior.mean)
        deviations.append(posterior.std)
    return EncodedScenes(scenes, torch.cat(means), torch.cat(deviations))


class _Ema:
    """Exponential moving average of parameters, with the usual warm-up of the decay."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.parameters = [p for module in modules for p in module.parameters()]
        self.shadow = [p.detach().clone() for p in self.parameters]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, parameter in zip(self.shadow, self.parameters):
            shadow.lerp_(parameter.detach(), 1 - decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for shadow, parameter in zip(self.shadow, self.parameters):
            parameter.copy_(shadow)


def _batches(data: EncodedScenes, settings: DiffusionSettings, seed: int) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Endless (latents, captions) batches: latents sampled from each scene's distribution, captions phrased at
    random, some left empty for classifier-free guidance."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    while True:
        index = torch.randint(len(data.scenes), (settings.batch_size,), generator=generator)
        noise = torch.randn(data.means[index].shape, generator=generator)
        latents = data.means[index] + data.deviations[index] * noise
        captions = [
            "" if rng.random() < settings.empty_caption_share else pretraining_caption(data.scenes[i], rng)
            for i in index.tolist()
        ]
        yield latents, captions


def train_diffusion(
    family: ModelFamily,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    tokenizer,
    noise_scheduler,
    data: EncodedScenes,
    settings: DiffusionSettings,
    seed: int,
) -> float:
    """Train the UNet and text encoder together in place; they end holding their EMA weights. Returns the mean
    loss of the last 100 steps."""
    torch.manual_seed(seed)
    modules = [unet, text_encoder]
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _cosine_lr(step, settings.steps, settings.warmup_steps)
    )
    ema = _Ema(modules, settings.ema_decay)
    alphas = noise_scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=settings.min_snr_gamma) / snr
    scale = family.latent_scaling_factor
    for module in modules:
        module.train()
    recent: list[float] = []
    batches = _batches(data, settings, seed)
    bar = tqdm(range(settings.steps), desc="UNet + text encoder", unit="step")
    for _ in bar:
        latents, captions = next(batches)
        latents = latents * scale
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, len(alphas), (latents.shape[0],))
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        conditioning = encode_captions(family, [tokenizer], [text_encoder], captions)
        prediction = unet(noisy, timesteps, conditioning.hidden_states).sample
        per_sample = F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weights[timesteps]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        ema.update()
        recent = (recent + [loss.item()])[-100:]
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
    ema.copy_to_model()
    for module in modules:
        module.eval()
    return sum(recent) / max(1, len(recent))
