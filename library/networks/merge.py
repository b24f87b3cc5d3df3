"""Merge a kohya LoRA into plain model weights: ``W += multiplier * alpha / rank * up @ down``.

The same arithmetic as peft's own merge and diffusers' ``fuse_lora``, which makes it the oracle for the files we
write and the core of the merge tools. DoRA modules are renormalised per output row to their stored magnitude,
with the multiplier scaling the low-rank update inside the norm, as the live peft layer does.

:func:`locate_modules` and :func:`merged_weight` are the two halves of :func:`merge_lora_into` for callers that do
not hold the model's weights in modules (the streaming merge tools find the modules on a meta-device model and
merge tensor by tensor as they read them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import nn

from library.models.families import ModelFamily
from library.networks.lora_file import LoraFileError, split_modules
from library.networks.lora_layouts import adapter_tensors
from library.networks.targets import index_modules

logger = logging.getLogger(__name__)


class AdapterUpdate(Protocol):
    """What merging needs of any adapter module (a LoRA pair, a LyCORIS LoKr or LoHa module)."""

    @property
    def update_numel(self) -> int: ...

    @property
    def scale(self) -> float: ...

    @property
    def dora_scale(self) -> torch.Tensor | None: ...

    def delta(self, shape: torch.Size) -> torch.Tensor: ...


def locate_modules(
    family: ModelFamily,
    unet: nn.Module,
    text_encoders: Sequence[nn.Module],
    modules: Mapping[str, AdapterUpdate],
    source: str = "LoRA",
) -> dict[str, tuple[nn.Module, str]]:
    """Each adapter module's model module and its component-relative path, checked to exist and to fit its weight.

    Only shapes are read, so the model may live on the meta device.
    """
    index = index_modules(family, unet, text_encoders)
    unknown = [name for name in modules if name not in index]
    if unknown:
        raise LoraFileError(
            f"{source}: {len(unknown)} module(s) match nothing in this {family.title} model, e.g. {unknown[0]!r}; "
            "is the LoRA for another model family?"
        )
    for name, weights in modules.items():
        weight = index[name][0].weight
        if weights.update_numel != weight.numel():
            raise LoraFileError(
                f"{source}: {name} holds an update of {weights.update_numel} values, which does not fit the model's "
                f"weight {tuple(weight.shape)}; is the LoRA for another model?"
            )
        if weights.dora_scale is not None and weights.dora_scale.numel() != weight.shape[0]:
            raise LoraFileError(
                f"{source}: {name}.dora_scale has shape {tuple(weights.dora_scale.shape)}; only one magnitude "
                "per output row is supported (LyCORIS wd_on_out)"
            )
    return {name: index[name] for name in modules}


def merged_weight(weight: torch.Tensor, update: torch.Tensor, dora_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``weight + update`` in float32; a DoRA magnitude renormalises each output row of the sum to it."""
    merged = weight.float() + update
    if dora_scale is not None:
        rows = (weight.shape[0], *([1] * (weight.ndim - 1)))
        norm = merged.reshape(weight.shape[0], -1).norm(dim=1).reshape(rows)
        merged = merged * (dora_scale.float().reshape(rows) / norm)
    return merged


@torch.no_grad()
def merge_lora_into(
    family: ModelFamily,
    unet: nn.Module,
    text_encoders: Sequence[nn.Module],
    lora_state_dict: Mapping[str, torch.Tensor],
    multiplier: float = 1.0,
    source: str = "LoRA",
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Add the LoRA's updates (a file's tensors, either layout, and its ``metadata``, where the diffusers layout
    keeps the alphas) into the modules' weights in place; returns the number of modules merged."""
    modules = split_modules(adapter_tensors(family, lora_state_dict, source, metadata), source)
    located = locate_modules(family, unet, text_encoders, modules, source)
    for name, weights in modules.items():
        weight = located[name][0].weight
        update = weights.delta(weight.shape) * (weights.scale * multiplier)
        weight.copy_(merged_weight(weight, update, weights.dora_scale).to(weight.dtype))
    logger.info("merged %d LoRA modules from %s at multiplier %g", len(modules), source, multiplier)
    return len(modules)
