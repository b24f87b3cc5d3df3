"""Render preview images with the modules being trained, without disturbing the training run.

The pipeline is assembled around the live UNet, text encoders and VAE objects (LoRA layers and all, mid-training),
so a preview shows exactly the current weights with nothing copied. Prompts are encoded the way training encodes
captions (:mod:`library.models.text_encoding`: same hidden state, clip_skip and SDXL pooled output) and handed to
the family's diffusers pipeline as embeddings.

Sampling must leave training exactly as it found it: modules go back to their train/eval flags, and the global
RNG states (torch, CUDA, ``random``, numpy) are restored, so a run with previews draws the same noise and data
order as one without. Each prompt's starting noise comes from its own CPU generator seeded with the prompt's seed:
the same weights, prompt and seed give the same picture on any device.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from library.models.families import ModelFamily
from library.models.fp8 import is_storage_only
from library.models.modes import evaluating
from library.models.pipeline import assemble_pipeline
from library.models.text_encoding import encode_captions
from library.sampling.files import SAMPLE_DIR_NAME, sample_path, save_png_atomic
from library.sampling.prompts import SamplePrompt
from library.sampling.samplers import FLOW_SAMPLER, build_flow_scheduler, build_scheduler

logger = logging.getLogger(__name__)


class LiveModel(Protocol):
    """What rendering needs; :class:`library.models.loader.BaseModel` fits. Modules must be unwrapped (no DDP)."""

    family: ModelFamily
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]
    tokenizers: list
    noise_scheduler: Any  # its ``.config`` is the training noise schedule the samplers are built from


@dataclass(frozen=True)
class Preview:
    """One rendered preview: its prompt settings, the picture and the file it was saved to."""

    prompt: SamplePrompt
    image: Image.Image
    path: Path


def render_samples(
    model: LiveModel,
    prompts: Sequence[SamplePrompt],
    output_dir: str | Path,
    output_name: str,
    step: int,
    clip_skip: int = 1,
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 1,
    token_lengths: Mapping[str, int] | None = None,
) -> list[Preview]:
    """Render every prompt (see :func:`generate_images`) and save it under ``<output_dir>/sample/`` (see
    :mod:`library.sampling.files`)."""
    prompts = for_family(model.family, prompts)
    images = generate_images(model, prompts, clip_skip=clip_skip, autocast_dtype=autocast_dtype,
                             batch_size=batch_size, token_lengths=token_lengths)
    previews = []
    for index, (prompt, image) in enumerate(zip(prompts, images)):
        path = save_png_atomic(image, sample_path(output_dir, output_name, step, index, prompt.seed), prompt)
        previews.append(Preview(prompt, image, path))
    logger.info("step %d: wrote %d preview(s) to %s", step, len(previews), Path(output_dir) / SAMPLE_DIR_NAME)
    return previews


def generate_images(
    model: LiveModel,
    prompts: Sequence[SamplePrompt],
    clip_skip: int = 1,
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 1,
    token_lengths: Mapping[str, int] | None = None,
) -> list[Image.Image]:
    """Render ``prompts`` with the live modules of ``model``; nothing about the training state changes.

    ``clip_skip`` has the sd-scripts meaning (1 = last layer). ``autocast_dtype`` (the run's mixed precision) is
    used on CUDA only, where it is fast; on CPU modules run in their own dtype, unless their dtypes differ (e.g. a
    bf16 UNet with an fp32 VAE), which needs autocast to the lowest precision among them to run at all.
    ``batch_size`` renders up to that many consecutive prompts with the same settings (size, steps, CFG, sampler,
    negative prompt) in one denoising loop, each from its own seed's noise: the same pictures up to float
    rounding, in far fewer, larger model calls. ``token_lengths`` overrides encoders' caption lengths as training
    encodes them (FLUX.1's T5).
    """
    if not prompts:
        return []
    prompts = for_family(model.family, prompts)
    modules = [model.unet, model.vae, *model.text_encoders]
    device = next(model.unet.parameters()).device
    images = []
    with _training_state_preserved(modules), torch.no_grad(), _autocast(modules, device, autocast_dtype):
        pipeline = _assemble_pipeline(model)
        progress = tqdm(total=len(prompts), desc="sampling", unit="image", leave=False)
        for batch in _batches(prompts, batch_size):
            images += _render(pipeline, model, batch, clip_skip, token_lengths)
            progress.update(len(batch))
        progress.close()
    return images


def _batches(prompts: Sequence[SamplePrompt], batch_size: int) -> Iterator[list[SamplePrompt]]:
    """Runs of consecutive prompts that differ only in text and seed, at most ``batch_size`` long."""
    batch: list[SamplePrompt] = []
    for prompt in prompts:
        if batch and (len(batch) == batch_size or _settings(batch[0]) != _settings(prompt)):
            yield batch
            batch = []
        batch.append(prompt)
    if batch:
        yield batch


def _settings(prompt: SamplePrompt) -> SamplePrompt:
    return replace(prompt, prompt="", seed=0)


def _assemble_pipeline(model: LiveModel):
    """The family's diffusers pipeline around the live modules."""
    pipeline = assemble_pipeline(
        model.family,
        model.unet,
        model.vae,
        model.text_encoders,
        model.tokenizers,
        build_scheduler("ddim", model.noise_scheduler.config),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def for_family(family: ModelFamily, prompts: Sequence[SamplePrompt]) -> list[SamplePrompt]:
    """The prompts as they will be rendered, and as their files say: sides floored to the family's
    ``resolution_multiple`` (FLUX.1's 16 px; its pipeline would otherwise shrink the picture behind the settings'
    back), and a flow-matching family samples with its own flow-matching Euler whatever sampler is named (the DDPM
    samplers do not apply)."""
    sampler = {"sampler": FLOW_SAMPLER} if family.prediction_type == "flow_matching" else {}
    return [replace(prompt, **dict(zip(("width", "height"), family.fitted_size(prompt.width, prompt.height))),
                    **sampler)
            for prompt in prompts]


def warn_unused_settings(
    family: ModelFamily, prompts: Sequence[SamplePrompt], source: str, default_sampler: str, default_named: bool
) -> None:
    """Log one warning per prompt line whose size the family renders smaller (not a multiple of its
    ``resolution_multiple``) or whose ``--ss`` a flow-matching family's previews do not use (and one for the run's
    ``sample.sampler`` when it was named): they sample with the family's flow-matching Euler."""
    for prompt in prompts:
        width, height = family.fitted_size(prompt.width, prompt.height)
        if (width, height) != (prompt.width, prompt.height):
            logger.warning("%s: the prompt line %r asks for %dx%d, rendered at %dx%d: %s sides are multiples of %d px",
                           source, prompt.prompt, prompt.width, prompt.height, width, height, family.title,
                           family.resolution_multiple)
    if family.prediction_type != "flow_matching":
        return
    why = f"{family.title} previews use the flow-matching Euler sampler"
    if default_named and default_sampler != FLOW_SAMPLER:
        logger.warning("sample.sampler %r is not used: %s", default_sampler, why)
    for prompt in prompts:
        if prompt.sampler not in (FLOW_SAMPLER, default_sampler):
            logger.warning("%s: the prompt line %r asks for --ss %s, which is not used: %s", source, prompt.prompt,
                           prompt.sampler, why)


def _scheduler(model: LiveModel, sampler: str):
    if model.family.prediction_type == "flow_matching":
        return build_flow_scheduler(model.noise_scheduler.config)
    return build_scheduler(sampler, model.noise_scheduler.config)


def _guidance(family: ModelFamily, prompt: SamplePrompt) -> tuple[dict[str, float], bool]:
    """The pipeline's guidance arguments for ``prompt``, and whether it needs the negative prompt's embeddings."""
    if family.cfg_kind == "classifier_free":
        return {"guidance_scale": prompt.cfg_scale}, True
    negative = bool(prompt.negative_prompt)
    options = {"true_cfg_scale": prompt.cfg_scale if negative else 1.0}
    if family.guidance_embedded:
        options["guidance_scale"] = prompt.guidance_scale
    return options, negative


def _render(
    pipeline, model: LiveModel, batch: list[SamplePrompt], clip_skip: int, token_lengths: Mapping[str, int] | None
) -> list[Image.Image]:
    """The pictures of prompts with the same settings; each batch gets a fresh scheduler because multistep
    samplers carry state between steps."""
    prompt, count = batch[0], len(batch)
    pipeline.scheduler = _scheduler(model, prompt.sampler)
    guidance, with_negative = _guidance(model.family, prompt)
    captions = [item.prompt for item in batch] + ([prompt.negative_prompt] * count if with_negative else [])
    encoded = encode_captions(model.family, model.tokenizers, model.text_encoders, captions, clip_skip, token_lengths)
    embeddings = {"prompt_embeds": encoded.hidden_states[:count]}
    if encoded.pooled is not None:
        embeddings["pooled_prompt_embeds"] = encoded.pooled[:count]
    if with_negative:
        embeddings["negative_prompt_embeds"] = encoded.hidden_states[count:]
        if encoded.pooled is not None:
            embeddings["negative_pooled_prompt_embeds"] = encoded.pooled[count:]
    generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch]
    result = pipeline(
        **embeddings,
        **guidance,
        width=prompt.width,
        height=prompt.height,
        num_inference_steps=prompt.steps,
        generator=generators[0] if count == 1 else generators,
        output_type="pil",
    )
    return list(result.images)


def _autocast(
    modules: Sequence[torch.nn.Module], device: torch.device, requested: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """Autocast to ``requested`` on CUDA, or to the lowest module precision when module dtypes are mixed (fp8
    weights are storage only: their layers up-cast themselves)."""
    dtype = requested if device.type == "cuda" else None
    dtypes = {p.dtype for module in modules for p in module.parameters()
              if p.is_floating_point() and not is_storage_only(p.dtype)}
    if dtype is None and len(dtypes) > 1:
        dtype = min(dtypes, key=lambda candidate: torch.finfo(candidate).bits)
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def _training_state_preserved(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Switch ``modules`` to eval mode; afterwards restore every sub-module's mode and all global RNG states."""
    rng_states = _capture_rng()
    try:
        with evaluating(modules):
            yield
    finally:
        _restore_rng(rng_states)


def _capture_rng() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["random"])
    np.random.set_state(states["numpy"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
