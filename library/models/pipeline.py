"""A family's diffusers pipeline around given modules, without the parts that would need a download."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from library.models.families import ModelFamily


def assemble_pipeline(
    family: ModelFamily,
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: Sequence[torch.nn.Module],
    tokenizers: Sequence[Any],
    scheduler: Any,
):
    """The pipeline class the family record names (no safety checker, no watermarker), sharing the modules."""
    import diffusers

    parts: dict[str, Any] = {family.denoiser: unet, "vae": vae, "scheduler": scheduler}
    for spec, encoder, tokenizer in zip(family.text_encoders, text_encoders, tokenizers):
        parts[spec.component] = encoder
        parts[spec.component.replace("text_encoder", "tokenizer")] = tokenizer
    if family.pipeline_class == "StableDiffusionPipeline":
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    elif family.pipeline_class == "StableDiffusionXLPipeline":
        parts.update(add_watermarker=False)
    return getattr(diffusers, family.pipeline_class)(**parts)


def pipeline_scheduler(family: ModelFamily) -> Any:
    """The sampling scheduler a family's saved pipeline carries: DDIM on the schedule of the DDPM-trained families
    (as their released pipelines), the training scheduler itself for flow matching (FLUX.1's flow-matching Euler)."""
    import diffusers

    if family.scheduler_class == "DDPMScheduler":
        return diffusers.DDIMScheduler(**dict(family.scheduler_config), set_alpha_to_one=False, steps_offset=1)
    return getattr(diffusers, family.scheduler_class)(**dict(family.scheduler_config))


def component_modules(
    family: ModelFamily, unet: torch.nn.Module, vae: torch.nn.Module, text_encoders: Sequence[torch.nn.Module]
) -> dict[str, torch.nn.Module]:
    """Modules by component name (``unet`` or ``transformer``, ``vae``, ``text_encoder``, ``text_encoder_2``);
    ``unet`` is the family's denoiser, whatever its kind."""
    modules = {family.denoiser: unet, "vae": vae}
    for spec, encoder in zip(family.text_encoders, text_encoders):
        modules[spec.component] = encoder
    return modules


def component_configs(modules: dict[str, torch.nn.Module]) -> dict[str, dict]:
    """Plain config dicts of diffusers (``FrozenDict``) and transformers (``PretrainedConfig``) modules."""
    configs = {}
    for name, module in modules.items():
        config = module.config
        plain = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        configs[name] = json.loads(json.dumps(plain, default=str))
    return configs
