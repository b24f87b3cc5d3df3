"""VAE names: diffusers ``AutoencoderKL`` <-> the original ``first_stage_model.*`` layout.

The original decoder numbers its levels from the bottom (``up.0`` is the last to run) while diffusers numbers
them in execution order, and its mid-block attention uses 1x1 convolutions where diffusers uses Linear layers.
"""

from __future__ import annotations

from collections.abc import Iterable

from library.models.single_file.rules import CONV_1X1, COPY, KeyRule, rename_by_module

_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_CONV_ATTENTION_WEIGHTS = tuple(f"attn_1.{name}.weight" for name in ("q", "k", "v", "proj_out"))


def _add_resnet(table: dict[str, str], diffusers: str, original: str) -> None:
    table[diffusers] = original
    table[f"{diffusers}.conv_shortcut"] = f"{original}.nin_shortcut"


def _add_mid_block(table: dict[str, str], side: str) -> None:
    _add_resnet(table, f"{side}.mid_block.resnets.0", f"{side}.mid.block_1")
    _add_resnet(table, f"{side}.mid_block.resnets.1", f"{side}.mid.block_2")
    for part, original_part in _ATTENTION_PARTS.items():
        table[f"{side}.mid_block.attentions.0.{part}"] = f"{side}.mid.attn_1.{original_part}"


def vae_module_table(config: dict) -> dict[str, str]:
    """diffusers module path -> original module path, for every module the config creates."""
    levels = len(config["block_out_channels"])
    layers = config.get("layers_per_block", 1)
    table = {
        "quant_conv": "quant_conv",
        "post_quant_conv": "post_quant_conv",
    }
    for side in ("encoder", "decoder"):
        table[f"{side}.conv_in"] = f"{side}.conv_in"
        table[f"{side}.conv_norm_out"] = f"{side}.norm_out"
        table[f"{side}.conv_out"] = f"{side}.conv_out"
        _add_mid_block(table, side)
    for level in range(levels):
        for layer in range(layers):
            _add_resnet(table, f"encoder.down_blocks.{level}.resnets.{layer}", f"encoder.down.{level}.block.{layer}")
        table[f"encoder.down_blocks.{level}.downsamplers.0.conv"] = f"encoder.down.{level}.downsample.conv"
        original_level = levels - 1 - level
        for layer in range(layers + 1):
            _add_resnet(
                table, f"decoder.up_blocks.{level}.resnets.{layer}", f"decoder.up.{original_level}.block.{layer}"
            )
        table[f"decoder.up_blocks.{level}.upsamplers.0.conv"] = f"decoder.up.{original_level}.upsample.conv"
    return table


def vae_rules(config: dict, keys: Iterable[str]) -> list[KeyRule]:
    """Copy rules, except the attention projection weights, which change between Linear and 1x1 conv."""
    table = vae_module_table(config)
    rules = []
    for key in keys:
        original = rename_by_module(key, table)
        transform = CONV_1X1 if original.endswith(_CONV_ATTENTION_WEIGHTS) else COPY
        rules.append(KeyRule(original, (key,), transform))
    return rules
