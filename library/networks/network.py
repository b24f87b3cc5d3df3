"""The adapter network: peft LoRA or LoKr adapters injected in place into the live UNet and text encoders.

peft's ``inject_adapter_in_model`` wraps each target module where it stands, so module paths, state-dict keys of
the base weights and the diffusers/transformers forward code stay as they were. :class:`LoraNetwork` is the thin
handle the trainer holds: the adapters by kohya name, their parameters and learning-rate groups, the strength
multiplier, and conversion to and from the file layout. What differs between adapter types (the peft config, the
file keys of a layer, loading a file's modules into layers) is the type's :class:`LayerFormat`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import PeftConfig, inject_adapter_in_model
from torch import nn

from library.models.families import ModelFamily
from library.networks.bundled_embeddings import split_bundled
from library.networks.config import LoraOptions
from library.networks.lokr_layers import LokrLayers
from library.networks.lora_file import LoraFileError, read_tensors_file, save_dtype, write_lora_file
from library.networks.lora_layers import LoraLayers
from library.networks.lora_layouts import adapter_tensors, file_tensors, peft_path
from library.networks.targets import ADAPTER, TEXT_ENCODER, UNET, Target, find_targets

logger = logging.getLogger(__name__)


class LayerFormat(Protocol):
    """One adapter type's peft layers and file modules (``lora_layers.py``, ``lokr_layers.py``)."""

    title: str

    def peft_config(self, options: LoraOptions, targets: Sequence[Target]) -> PeftConfig: ...

    def prepare(self, layer: nn.Module, target: Target, options: LoraOptions) -> None: ...

    def tensors(self, name: str, layer: nn.Module) -> dict[str, torch.Tensor]: ...

    def split(self, state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]: ...

    def check(self, name: str, layer: nn.Module, weights: Any, source: str) -> None: ...

    def copy(self, layer: nn.Module, weights: Any) -> None: ...


FORMATS: dict[str, LayerFormat] = {"lora": LoraLayers(), "lokr": LokrLayers()}


def inject_lora(
    family: ModelFamily, unet: nn.Module, text_encoders: Sequence[nn.Module], options: LoraOptions
) -> LoraNetwork:
    """Freeze the model and wrap every target module of ``family`` with a trainable adapter of ``options.module``."""
    layer_format = FORMATS[options.module]
    targets = find_targets(family, unet, text_encoders, options)
    components: dict[str | int, nn.Module] = {UNET: unet, **dict(enumerate(text_encoders))}
    for component, module in components.items():
        module.requires_grad_(False)
        mine = [target for target in targets if target.component == component]
        if mine:
            inject_adapter_in_model(layer_format.peft_config(options, mine), module, adapter_name=ADAPTER)
    layers = {target.name: components[target.component].get_submodule(target.path) for target in targets}
    for target in targets:
        layer_format.prepare(layers[target.name], target, options)
    logger.info(
        "%s: %d UNet and %d text encoder modules (dim %d, alpha %g%s%s%s%s)",
        layer_format.title,
        sum(t.is_unet for t in targets),
        sum(not t.is_unet for t in targets),
        options.dim,
        options.alpha,
        f", conv_dim {options.conv_dim}" if options.locon else "",
        ", DoRA" if options.use_dora else "",
        f", factor {options.lokr_factor}" if options.is_lokr else "",
        ", full matrix" if options.lokr_full_matrix else "",
    )
    return LoraNetwork(family, options, targets, layers)


def _adapter_parameters(layer: nn.Module) -> list[nn.Parameter]:
    return [param for name, param in layer.named_parameters() if not name.startswith("base_layer.")]


class LoraNetwork:
    """Handle on injected adapters; ``modules`` maps kohya names to the peft layers."""

    def __init__(
        self,
        family: ModelFamily,
        options: LoraOptions,
        targets: Sequence[Target],
        modules: Mapping[str, nn.Module],
    ) -> None:
        self.family = family
        self.options = options
        self.format = FORMATS[options.module]
        self.targets = {target.name: target for target in targets}
        self.modules = dict(modules)
        self.multiplier = 1.0

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.modules.values() for p in _adapter_parameters(layer) if p.requires_grad]

    def parameters_by_part(self) -> dict[str, list[nn.Parameter]]:
        """The adapter tensors by :attr:`Target.part` (UNet, text encoders): what trains at one learning rate."""
        parts: dict[str, list[nn.Parameter]] = {UNET: [], TEXT_ENCODER: []}
        for name, layer in self.modules.items():
            parts[self.targets[name].part] += _adapter_parameters(layer)
        return parts

    def set_multiplier(self, multiplier: float) -> None:
        """Scale every adapter's contribution (1.0 = as trained), e.g. to preview other strengths."""
        for layer in self.modules.values():
            layer.set_scale(ADAPTER, multiplier)
        self.multiplier = multiplier

    @torch.no_grad()
    def state_dict_kohya(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The adapters in their file layout (``lora_file.py``, ``lokr.py``), on the CPU in ``dtype``."""
        return {
            key: tensor.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()
            for name, layer in self.modules.items()
            for key, tensor in self.format.tensors(name, layer).items()
        }

    def peft_paths(self) -> dict[str, str]:
        """Each adapter's ``<component>.<module path>``, as the diffusers layout names it."""
        return {
            name: peft_path(self.family, None if target.is_unet else int(target.component), target.path)
            for name, target in self.targets.items()
        }

    def save(self, path: str | Path, precision: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """Write the adapters as a LoRA / LoKr file in ``precision`` (fp16, bf16, float) and the configured layout
        (``options.save_format``, see ``lora_layouts.py``); returns its metadata."""
        tensors = self.state_dict_kohya(save_dtype(precision))
        paths = self.peft_paths() if self.options.save_format == "diffusers" else {}
        tensors, layout_metadata = file_tensors(self.family, tensors, self.options.save_format, paths, str(path))
        return write_lora_file(path, tensors, {**metadata, **layout_metadata})

    def load_file(self, path: str | Path, strict: bool = True) -> dict[str, str]:
        """Continue from a LoRA or LoKr file (``network_weights``) in either layout; returns the file's metadata."""
        tensors, metadata = read_tensors_file(path)
        self.load_kohya(adapter_tensors(self.family, tensors, str(path), metadata), strict=strict, source=str(path))
        return metadata

    @torch.no_grad()
    def load_kohya(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, source: str = "LoRA") -> None:
        """Copy file-layout weights into the adapters; the file's alpha replaces the configured one per module.

        ``strict`` refuses a file that lacks adapters this network has or holds ones it has not.
        """
        weights = self.format.split(split_bundled(state_dict)[0], source)
        missing = [name for name in self.modules if name not in weights]
        unexpected = [name for name in weights if name not in self.modules]
        if strict and (missing or unexpected):
            problem = (
                f"lacks {len(missing)} module(s) of this network, e.g. {missing[0]!r}"
                if missing
                else f"has {len(unexpected)} module(s) this network does not, e.g. {unexpected[0]!r}"
            )
            raise LoraFileError(
                f"{source} {problem}: it was trained with other network options (dim, conv_dim, "
                f"train_*_only) or for another model family than {self.family.name}"
            )
        if missing or unexpected:
            logger.warning("%s: %d module(s) not in the file, %d unused", source, len(missing), len(unexpected))
        usable = {name: module_weights for name, module_weights in weights.items() if name in self.modules}
        for name, module_weights in usable.items():  # check everything before changing anything
            self.format.check(name, self.modules[name], module_weights, source)
        for name, module_weights in usable.items():
            self.format.copy(self.modules[name], module_weights)
            self.modules[name].set_scale(ADAPTER, self.multiplier)
        logger.info("loaded %d adapter modules from %s", len(usable), source)
