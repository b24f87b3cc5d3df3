"""peft LoKr layers in LyCORIS's layout: the peft config that builds them, their tensors by file key, and loading a
file's LoKr modules back into them (layout and math in ``lokr.py``).

peft splits a dimension into ``factor`` and the rest without ordering the pair, and has no full-matrix mode, so
after injection each layer's factors are made again in the shapes LyCORIS gives them (:func:`lokr_layout`), and
initialised as LyCORIS does (``w1`` random, ``w2``'s last factor zero: the update starts at zero). Modules with
both factors whole keep alpha = rank, so their scale is 1 as every LoKr reader applies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from peft import LoKrConfig
from peft.tuners.lokr import LoKrLayer
from torch import nn

from library.networks.config import LoraOptions
from library.networks.lokr import FACTOR_KEYS, LokrWeights, lokr_layout, split_lokr
from library.networks.lora_file import LoraFileError
from library.networks.targets import ADAPTER, Target


def _parameters(layer: LoKrLayer, field: str) -> nn.ParameterDict:
    return getattr(layer, FACTOR_KEYS[field].removeprefix("."))


def layer_weights(layer: LoKrLayer) -> LokrWeights:
    """The layer's factors and alpha as a LoKr module."""
    present = [field for field in FACTOR_KEYS if ADAPTER in _parameters(layer, field)]
    factors = {field: _parameters(layer, field)[ADAPTER] for field in present}
    return LokrWeights(**factors, alpha=float(layer.alpha[ADAPTER]))


def _describe(weights: LokrWeights) -> str:
    return ", ".join(f"{FACTOR_KEYS[field][1:]} {tuple(tensor.shape)}" for field, tensor in weights.factors.items())


class LokrLayers:
    """LyCORIS LoKr adapters in peft ``LoKrLayer``s."""

    title = "LoKr"

    @staticmethod
    def peft_config(options: LoraOptions, targets: Sequence[Target]) -> LoKrConfig:
        """One peft config per component; modules whose rank/alpha differ from dim/alpha go in the patterns."""
        return LoKrConfig(
            r=options.dim,
            alpha=options.alpha,
            decompose_factor=options.lokr_factor,
            target_modules=[target.path for target in targets],
            rank_pattern={t.path: t.rank for t in targets if t.rank != options.dim},
            alpha_pattern={t.path: t.alpha for t in targets if t.alpha != options.alpha},
        )

    @staticmethod
    @torch.no_grad()
    def prepare(layer: LoKrLayer, target: Target, options: LoraOptions) -> None:
        """Remake the layer's factors in LyCORIS's layout and initialisation."""
        base = layer.get_base_layer().weight
        layout = lokr_layout(tuple(base.shape), target.rank, options.lokr_factor, options.lokr_full_matrix)
        for field in FACTOR_KEYS:
            if ADAPTER in _parameters(layer, field):
                del _parameters(layer, field)[ADAPTER]
        for field, shape in layout.shapes().items():
            _parameters(layer, field)[ADAPTER] = nn.Parameter(torch.empty(shape, device=base.device))
        layer.reset_adapter_parameters_lycoris_way(ADAPTER)
        if layout.rank is None:
            layer.alpha[ADAPTER] = target.rank
        layer.set_scale(ADAPTER, 1.0)

    @staticmethod
    def tensors(name: str, layer: LoKrLayer) -> dict[str, torch.Tensor]:
        return layer_weights(layer).tensors(name)

    @staticmethod
    def split(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, LokrWeights]:
        rest, modules = split_lokr(state_dict, source)
        if rest:
            raise LoraFileError(
                f"{source}: key {next(iter(rest))!r} is not part of a LoKr module; set network.module to the file's "
                "adapter type ('lora' for a kohya LoRA)"
            )
        return modules

    @staticmethod
    def check(name: str, layer: LoKrLayer, weights: LokrWeights, source: str) -> None:
        expected = layer_weights(layer)
        shapes = {field: tensor.shape for field, tensor in weights.factors.items()}
        if shapes != {field: tensor.shape for field, tensor in expected.factors.items()}:
            raise LoraFileError(
                f"{source}: {name} holds {_describe(weights)}, this network needs {_describe(expected)}; set network "
                "dim/conv_dim, lokr_factor and lokr_full_matrix as the file was trained"
            )
        if weights.dora_scale is not None:
            raise LoraFileError(f"{source}: {name} has a dora_scale; LoKr with DoRA cannot be trained further")

    @staticmethod
    def copy(layer: LoKrLayer, weights: LokrWeights) -> None:
        for field, tensor in weights.factors.items():
            _parameters(layer, field)[ADAPTER].copy_(tensor)
        if weights.rank is not None and weights.alpha is not None:
            layer.alpha[ADAPTER] = weights.alpha
