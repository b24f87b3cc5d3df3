"""Merge a kohya LoRA into plain model weights: ``W += multiplier * alpha / rank * up @ down``.

The same arithmetic as peft's own merge and diffusers' ``fuse_lora``, which makes it the oracle for the files we
write and the core of the merge tools. DoRA modules are renormalised per output row to their stored magnitude,
with the multiplier scaling the low-rank update inside the norm, as the live peft layer does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from library.models.families import ModelFamily
from library.networks.lora_file import LoraFileError, split_modules
from library.networks.targets import index_modules

logger = logging.getLogger(__name__)


@torch.no_grad()
def merge_lora_into(
    family: ModelFamily,
    unet: nn.Module,
    text_encoders: Sequence[nn.Module],
    lora_state_dict: Mapping[str, torch.Tensor],
    multiplier: float = 1.0,
    source: str = "LoRA",
) -> int:
    """Add the LoRA's updates into the modules' weights in place; returns the number of modules merged."""
    modules = split_modules(lora_state_dict, source)
    index = index_modules(family, unet, text_encoders)
    unknown = [name for name in modules if name not in index]
    if unknown:
        raise LoraFileError(
            f"{source}: {len(unknown)} module(s) match nothing in this {family.title} model, e.g. {unknown[0]!r}; "
            "is the LoRA for another model family?"
        )
    for name, weights in modules.items():
        module, _ = index[name]
        weight = module.weight
        if weights.up.shape[0] * weights.down[0].numel() != weight.numel():
            raise LoraFileError(
                f"{source}: {name} (lora_up {tuple(weights.up.shape)}, lora_down {tuple(weights.down.shape)}) does "
                f"not fit the model's weight {tuple(weight.shape)}; is the LoRA for another model?"
            )
        merged = weight.float() + weights.delta(weight.shape) * (weights.scale * multiplier)
        if weights.dora_scale is not None:
            row_shape = (weight.shape[0], *([1] * (weight.ndim - 1)))
            norm = merged.reshape(weight.shape[0], -1).norm(dim=1).reshape(row_shape)
            merged = merged * (weights.dora_scale.float().reshape(row_shape) / norm)
        weight.copy_(merged.to(weight.dtype))
    logger.info("merged %d LoRA modules from %s at multiplier %g", len(modules), source, multiplier)
    return len(modules)
