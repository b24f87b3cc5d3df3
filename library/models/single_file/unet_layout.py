"""UNet names: diffusers ``UNet2DConditionModel`` <-> the original ``model.diffusion_model.*`` layout.

The original UNet numbers its blocks sequentially: ``input_blocks.N`` holds one resnet (``.0``) plus, at attention
levels, one transformer (``.1``), and each level but the last ends with a downsampler (``input_blocks.N.0.op``).
``output_blocks`` mirror that with one extra layer per level and the upsampler after the transformer.
The table is generated from the config, so any number of levels, layers and transformer depths works.
"""

from __future__ import annotations

from collections.abc import Iterable

from library.models.single_file.rules import KeyRule, rename_by_module

# Resnet sub-modules: diffusers name -> original name.
_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

_FIXED_MODULES = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL size/crop conditioning
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "mid_block.attentions.0": "middle_block.1",
}


def _layers_per_level(config: dict) -> list[int]:
    layers = config.get("layers_per_block", 2)
    levels = len(config["block_out_channels"])
    return list(layers) if isinstance(layers, (list, tuple)) else [layers] * levels


def _add_resnet(table: dict[str, str], diffusers: str, original: str) -> None:
    for part, original_part in _RESNET_PARTS.items():
        table[f"{diffusers}.{part}"] = f"{original}.{original_part}"


def unet_module_table(config: dict) -> dict[str, str]:
    """diffusers module path -> original module path, for every module the config creates."""
    table = dict(_FIXED_MODULES)
    _add_resnet(table, "mid_block.resnets.0", "middle_block.0")
    _add_resnet(table, "mid_block.resnets.1", "middle_block.2")
    layers = _layers_per_level(config)
    levels = len(layers)

    block = 1
    for level, count in enumerate(layers):
        for layer in range(count):
            _add_resnet(table, f"down_blocks.{level}.resnets.{layer}", f"input_blocks.{block}.0")
            table[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{block}.1"
            block += 1
        if level < levels - 1:
            table[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
            block += 1

    block = 0
    for level, count in enumerate(reversed(layers)):
        has_attention = "CrossAttn" in config["up_block_types"][level]
        for layer in range(count + 1):
            _add_resnet(table, f"up_blocks.{level}.resnets.{layer}", f"output_blocks.{block}.0")
            table[f"up_blocks.{level}.attentions.{layer}"] = f"output_blocks.{block}.1"
            block += 1
        if level < levels - 1:
            upsampler_slot = 2 if has_attention else 1
            table[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{block - 1}.{upsampler_slot}.conv"
    return table


def unet_rules(config: dict, keys: Iterable[str]) -> list[KeyRule]:
    """One copy rule per UNet tensor: the two layouts differ only in names."""
    table = unet_module_table(config)
    return [KeyRule(rename_by_module(key, table), (key,)) for key in keys]
