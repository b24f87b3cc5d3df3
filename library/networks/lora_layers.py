"""peft LoRA layers and the kohya LoRA file: the peft config that builds them, their tensors by file key, and
loading a file's modules back into them (layout in ``lora_file.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from library.networks.config import LoraOptions
from library.networks.lokr import LOKR_SUFFIXES
from library.networks.lora_file import ALPHA, DORA_SCALE, DOWN, UP, LoraFileError, ModuleWeights, split_modules
from library.networks.targets import ADAPTER, Target


def _dora_scale_shape(layer: LoraLayer) -> tuple[int, ...]:
    """The file's magnitude layout: one value per output row, ``[out, 1]`` / ``[out, 1, 1, 1]`` (LyCORIS)."""
    weight = layer.get_base_layer().weight
    return (weight.shape[0], *([1] * (weight.ndim - 1)))


class LoraLayers:
    """kohya LoRA (LoCon, DoRA) adapters in peft ``LoraLayer``s."""

    title = "LoRA"

    @staticmethod
    def peft_config(options: LoraOptions, targets: Sequence[Target]) -> LoraConfig:
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

    @staticmethod
    def prepare(layer: LoraLayer, target: Target, options: LoraOptions) -> None:
        """peft builds LoRA layers as kohya lays them out; nothing to adjust."""

    @staticmethod
    def tensors(name: str, layer: LoraLayer) -> dict[str, torch.Tensor]:
        out = {
            name + DOWN: layer.lora_A[ADAPTER].weight,
            name + UP: layer.lora_B[ADAPTER].weight,
            name + ALPHA: torch.tensor(float(layer.lora_alpha[ADAPTER])),
        }
        if layer.use_dora.get(ADAPTER, False):
            out[name + DORA_SCALE] = layer.lora_magnitude_vector[ADAPTER].weight.reshape(_dora_scale_shape(layer))
        return out

    @staticmethod
    def split(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, ModuleWeights]:
        lokr = next((key for key in state_dict if key.endswith(LOKR_SUFFIXES)), None)
        if lokr is not None:
            raise LoraFileError(f"{source}: key {lokr!r} is LoKr; set network.module = 'lokr' to load it")
        return split_modules(state_dict, source)

    @staticmethod
    def check(name: str, layer: LoraLayer, weights: ModuleWeights, source: str) -> None:
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

    @staticmethod
    def copy(layer: LoraLayer, weights: ModuleWeights) -> None:
        layer.lora_A[ADAPTER].weight.copy_(weights.down)
        layer.lora_B[ADAPTER].weight.copy_(weights.up)
        if weights.dora_scale is not None:
            magnitude = layer.lora_magnitude_vector[ADAPTER].weight
            magnitude.copy_(weights.dora_scale.reshape(magnitude.shape))
        if weights.alpha is not None:
            layer.lora_alpha[ADAPTER] = weights.alpha
