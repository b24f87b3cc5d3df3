"""The LoRA network: peft adapters injected in place into the live UNet and text encoders.

peft's ``inject_adapter_in_model`` wraps each target module where it stands, so module paths, state-dict keys of
the base weights and the diffusers/transformers forward code stay as they were. :class:`LoraNetwork` is the thin
handle the trainer holds: the adapters by kohya name, their parameters and learning-rate groups, the strength
multiplier, and conversion to and from the kohya file layout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from library.models.families import ModelFamily
from library.networks.config import LoraOptions
from library.networks.lora_file import (
    LoraFileError,
    ModuleWeights,
    read_lora_file,
    save_dtype,
    split_modules,
    write_lora_file,
)
from library.networks.targets import TEXT_ENCODER, UNET, Target, find_targets

logger = logging.getLogger(__name__)

ADAPTER = "default"


def _peft_config(options: LoraOptions, targets: Sequence[Target]) -> LoraConfig:
    """One peft config per component; modules whose rank/alpha differ from dim/alpha go in the patterns."""
    return LoraConfig(
        r=options.dim,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        use_dora=options.use_dora,
        use_rslora=False,  # kohya scale: alpha / rank
        init_lora_weights=True,  # down kaiming-uniform, up zeros
        target_modules=[target.path for target in targets],
        rank_pattern={t.path: t.rank for t in targets if t.rank != options.dim},
        alpha_pattern={t.path: t.alpha for t in targets if t.alpha != options.alpha},
    )


def inject_lora(
    family: ModelFamily, unet: nn.Module, text_encoders: Sequence[nn.Module], options: LoraOptions
) -> LoraNetwork:
    """Freeze the model and wrap every target module of ``family`` with a trainable LoRA adapter."""
    targets = find_targets(family, unet, text_encoders, options)
    components: dict[str | int, nn.Module] = {UNET: unet, **dict(enumerate(text_encoders))}
    for component, module in components.items():
        module.requires_grad_(False)
        mine = [target for target in targets if target.component == component]
        if mine:
            inject_adapter_in_model(_peft_config(options, mine), module, adapter_name=ADAPTER)
    layers = {target.name: components[target.component].get_submodule(target.path) for target in targets}
    logger.info(
        "LoRA: %d UNet and %d text encoder modules (dim %d, alpha %g%s%s)",
        sum(t.is_unet for t in targets),
        sum(not t.is_unet for t in targets),
        options.dim,
        options.alpha,
        f", conv_dim {options.conv_dim}" if options.locon else "",
        ", DoRA" if options.use_dora else "",
    )
    return LoraNetwork(family, options, targets, layers)


def _adapter_parameters(layer: LoraLayer) -> list[nn.Parameter]:
    return [param for name, param in layer.named_parameters() if not name.startswith("base_layer.")]


def _dora_scale_shape(layer: LoraLayer) -> tuple[int, ...]:
    """The file's magnitude layout: one value per output row, ``[out, 1]`` / ``[out, 1, 1, 1]`` (LyCORIS)."""
    weight = layer.get_base_layer().weight
    return (weight.shape[0], *([1] * (weight.ndim - 1)))


class LoraNetwork:
    """Handle on injected adapters; ``modules`` maps kohya names to the peft layers."""

    def __init__(
        self,
        family: ModelFamily,
        options: LoraOptions,
        targets: Sequence[Target],
        modules: Mapping[str, LoraLayer],
    ) -> None:
        self.family = family
        self.options = options
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
        """The adapters in the kohya layout (described in ``lora_file.py``), on the CPU in ``dtype``."""
        out: dict[str, torch.Tensor] = {}

        def put(key: str, tensor: torch.Tensor) -> None:
            out[key] = tensor.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()

        for name, layer in self.modules.items():
            put(f"{name}.lora_down.weight", layer.lora_A[ADAPTER].weight)
            put(f"{name}.lora_up.weight", layer.lora_B[ADAPTER].weight)
            put(f"{name}.alpha", torch.tensor(float(layer.lora_alpha[ADAPTER])))
            if layer.use_dora.get(ADAPTER, False):
                put(f"{name}.dora_scale", layer.lora_magnitude_vector[ADAPTER].weight.reshape(_dora_scale_shape(layer)))
        return out

    def save(self, path: str | Path, precision: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """Write the adapters as a kohya LoRA file in ``precision`` (fp16, bf16, float); returns its metadata."""
        return write_lora_file(path, self.state_dict_kohya(save_dtype(precision)), metadata)

    def load_file(self, path: str | Path, strict: bool = True) -> dict[str, str]:
        """Continue from a LoRA file (``network_weights``); returns the file's metadata."""
        tensors, metadata = read_lora_file(path)
        self.load_kohya(tensors, strict=strict, source=str(path))
        return metadata

    @torch.no_grad()
    def load_kohya(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, source: str = "LoRA") -> None:
        """Copy kohya-layout weights into the adapters; the file's alpha replaces the configured one per module.

        ``strict`` refuses a file that lacks adapters this network has or holds ones it has not.
        """
        weights = split_modules(state_dict, source)
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
            self._check_module(name, module_weights, source)
        for name, module_weights in usable.items():
            self._copy_module(name, module_weights)
        logger.info("loaded %d adapter modules from %s", len(usable), source)

    def _check_module(self, name: str, weights: ModuleWeights, source: str) -> None:
        layer = self.modules[name]
        for tensor, param, role in (
            (weights.down, layer.lora_A[ADAPTER].weight, "lora_down"),
            (weights.up, layer.lora_B[ADAPTER].weight, "lora_up"),
        ):
            if tensor.shape != param.shape:
                raise LoraFileError(
                    f"{source}: {name}.{role}.weight has shape {tuple(tensor.shape)}, this network needs "
                    f"{tuple(param.shape)}; set network dim/conv_dim to the file's rank ({weights.rank})"
                )
        has_dora = layer.use_dora.get(ADAPTER, False)
        if (weights.dora_scale is not None) != has_dora:
            state = "has" if weights.dora_scale is not None else "lacks"
            raise LoraFileError(f"{source}: {name} {state} a dora_scale; set network use_dora to match the file")
        if has_dora and weights.dora_scale.shape != _dora_scale_shape(layer):
            raise LoraFileError(
                f"{source}: {name}.dora_scale has shape {tuple(weights.dora_scale.shape)}, expected "
                f"{_dora_scale_shape(layer)} (one magnitude per output row)"
            )

    def _copy_module(self, name: str, weights: ModuleWeights) -> None:
        layer = self.modules[name]
        layer.lora_A[ADAPTER].weight.copy_(weights.down)
        layer.lora_B[ADAPTER].weight.copy_(weights.up)
        if weights.dora_scale is not None:
            magnitude = layer.lora_magnitude_vector[ADAPTER].weight
            magnitude.copy_(weights.dora_scale.reshape(magnitude.shape))
        if weights.alpha is not None:
            layer.lora_alpha[ADAPTER] = weights.alpha
            layer.set_scale(ADAPTER, self.multiplier)
