"""FLUX.1 transformer names: diffusers ``FluxTransformer2DModel`` <-> Black Forest Labs' layout.

BFL's files (``flux1-dev.safetensors``, and ComfyUI checkpoints under ``model.diffusion_model.``) fuse what diffusers
keeps apart: a double block's image and text attentions each hold q, k and v in one ``qkv`` tensor; a single block's
``linear1`` holds q, k, v and the MLP input; the final layer's modulation orders (shift, scale) where diffusers
orders (scale, shift). The table is generated from the config, so any depth and width works, and the same rules
read and write (see ``rules.py``). diffusers' own reader (``convert_flux_transformer_checkpoint_to_diffusers``)
hard-codes FLUX.1's 3072-wide blocks, so it cannot read a tiny model; the tests check these rules against it at
FLUX.1's real width.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from library.models.single_file.rules import (
    CONCAT_ROWS,
    SWAP_HALVES,
    KeyRule,
    concat_rows_sized,
    rename_by_module,
)

MLP_RATIO = 4  # FLUX.1's MLP width over its model width (fixed in diffusers' FluxTransformer2DModel)

_FIXED_MODULES = {
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "context_embedder": "txt_in",
    "x_embedder": "img_in",
    "proj_out": "final_layer.linear",
}

_DOUBLE_BLOCK_MODULES = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.norm_q.weight": "img_attn.norm.query_norm.scale",
    "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
    "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
    "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
}
_DOUBLE_BLOCK_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_DOUBLE_BLOCK_HEIGHTS = (1, 1, 1)  # each part's rows, in units of the model width

_SINGLE_BLOCK_MODULES = {
    "norm.linear": "modulation.lin",
    "attn.norm_q.weight": "norm.query_norm.scale",
    "attn.norm_k.weight": "norm.key_norm.scale",
    "proj_out": "linear2",
}
_SINGLE_BLOCK_FUSED = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
_SINGLE_BLOCK_HEIGHTS = (1, 1, 1, MLP_RATIO)
_FINAL_MODULATION = ("final_layer.adaLN_modulation.1", "norm_out.linear")  # (BFL, diffusers), halves swapped


@dataclass(frozen=True)
class BflModule:
    """One Linear of the BFL transformer and the diffusers Linears it holds, stacked by rows.

    ``heights`` are the parts' row counts in units of the model width (q, k, v: 1 each; the MLP input:
    ``MLP_RATIO``); ``swap_halves`` marks the final modulation, whose two output halves BFL orders the other way.
    """

    bfl: str
    parts: tuple[str, ...]
    heights: tuple[int, ...] = (1,)
    swap_halves: bool = False


def bfl_linear_modules(num_layers: int, num_single_layers: int) -> list[BflModule]:
    """Every Linear of a FLUX.1 transformer of this depth, in BFL and diffusers names (what a LoRA can adapt)."""
    table = bfl_module_table({"num_layers": num_layers, "num_single_layers": num_single_layers})
    modules = [BflModule(bfl, (path,)) for path, bfl in table.items() if not path.endswith(".weight")]
    for index in range(num_layers):
        for bfl, parts in _DOUBLE_BLOCK_FUSED.items():
            fused = tuple(f"transformer_blocks.{index}.{part}" for part in parts)
            modules.append(BflModule(f"double_blocks.{index}.{bfl}", fused, _DOUBLE_BLOCK_HEIGHTS))
    for index in range(num_single_layers):
        fused = tuple(f"single_transformer_blocks.{index}.{part}" for part in _SINGLE_BLOCK_FUSED)
        modules.append(BflModule(f"single_blocks.{index}.linear1", fused, _SINGLE_BLOCK_HEIGHTS))
    bfl, path = _FINAL_MODULATION
    modules.append(BflModule(bfl, (path,), swap_halves=True))
    return modules


def bfl_module_table(config: dict) -> dict[str, str]:
    """diffusers module (or whole-key) path -> BFL path, for every tensor that is copied one to one."""
    table = dict(_FIXED_MODULES)
    for index in range(config["num_layers"]):
        for diffusers, bfl in _DOUBLE_BLOCK_MODULES.items():
            table[f"transformer_blocks.{index}.{diffusers}"] = f"double_blocks.{index}.{bfl}"
    for index in range(config["num_single_layers"]):
        for diffusers, bfl in _SINGLE_BLOCK_MODULES.items():
            table[f"single_transformer_blocks.{index}.{diffusers}"] = f"single_blocks.{index}.{bfl}"
    return table


def _fused_rules(config: dict) -> list[KeyRule]:
    width = config["num_attention_heads"] * config["attention_head_dim"]
    single_sizes = concat_rows_sized(tuple(width * height for height in _SINGLE_BLOCK_HEIGHTS))
    rules = []
    for kind in ("weight", "bias"):
        for index in range(config["num_layers"]):
            for bfl, parts in _DOUBLE_BLOCK_FUSED.items():
                sources = tuple(f"transformer_blocks.{index}.{part}.{kind}" for part in parts)
                rules.append(KeyRule(f"double_blocks.{index}.{bfl}.{kind}", sources, CONCAT_ROWS))
        for index in range(config["num_single_layers"]):
            sources = tuple(f"single_transformer_blocks.{index}.{part}.{kind}" for part in _SINGLE_BLOCK_FUSED)
            rules.append(KeyRule(f"single_blocks.{index}.linear1.{kind}", sources, single_sizes))
        bfl, path = _FINAL_MODULATION
        rules.append(KeyRule(f"{bfl}.{kind}", (f"{path}.{kind}",), SWAP_HALVES))
    return rules


def bfl_transformer_rules(config: dict, keys: Iterable[str]) -> list[KeyRule]:
    """Every transformer tensor's rule: fused q/k/v(/MLP) tensors, the swapped final modulation, copies."""
    fused = _fused_rules(config)
    covered = {key for rule in fused for key in rule.diffusers}
    table = bfl_module_table(config)
    copies = [KeyRule(rename_by_module(key, table), (key,)) for key in keys if key not in covered]
    return copies + fused
