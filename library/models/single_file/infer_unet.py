"""Infer a diffusers UNet config from the shapes of an original-layout UNet.

Levels are found from the downsamplers (``input_blocks.N.0.op``), layers per level from the resnets between
them, widths from each level's first resnet, transformer depth from the count of ``transformer_blocks``.
Attention heads do not show in weights and follow the family's convention.
"""

from __future__ import annotations

from library.models.single_file.shape_reader import ShapeReader

HEAD_WIDTH = 64  # SD2 / SDXL UNets use 64-wide attention heads
SD1_HEADS = 8  # SD1 UNets use 8 heads in every block


def _down_levels(shapes: ShapeReader) -> list[list[int]]:
    """Input-block indices of each level's resnets (block 0 is conv_in)."""
    levels: list[list[int]] = [[]]
    for block in range(1, shapes.count("input_blocks")):
        if shapes.has(f"input_blocks.{block}.0.op.weight"):
            levels.append([])
        else:
            levels[-1].append(block)
    if not all(levels):
        raise ValueError(f"{shapes.prefix}input_blocks: a level without resnets; not a Stable Diffusion UNet")
    return levels


def _depth(shapes: ShapeReader, block: str) -> int:
    """Transformer depth of the attention module at ``block`` (0 when the block has none)."""
    if not shapes.has(f"{block}.proj_in.weight"):
        return 0
    return shapes.count(f"{block}.transformer_blocks")


def _uniform(values: list[int]) -> int | list[int]:
    return values[0] if len(set(values)) == 1 else values


def infer_unet_config(
    shapes: ShapeReader, reference: dict, heads_rule: str, pooled_dim: int | None
) -> dict:
    """``reference`` supplies what shapes cannot tell; ``pooled_dim`` is the pooled text width SDXL conditions on."""
    levels = _down_levels(shapes)
    layers = [len(level) for level in levels]
    widths = [shapes(f"input_blocks.{level[0]}.0.out_layers.3.weight")[0] for level in levels]
    down_depths = [_depth(shapes, f"input_blocks.{level[0]}.1") for level in levels]
    mid_depth = _depth(shapes, "middle_block.1")
    if not mid_depth:
        raise shapes.missing("middle_block.1.proj_in.weight")
    # diffusers gives the mid block the last level's depth; a level without attention has no depth of its own.
    depths = [depth or 1 for depth in down_depths[:-1]] + [down_depths[-1] or mid_depth]
    if depths[-1] != mid_depth:
        raise ValueError(
            f"{shapes.prefix}middle_block.1 has {mid_depth} transformer blocks but the last level has "
            f"{depths[-1]}; diffusers cannot represent this UNet"
        )

    up_types = []
    first_block = 0
    for level, count in enumerate(reversed(layers)):
        up_depth = _depth(shapes, f"output_blocks.{first_block}.1")
        if up_depth and up_depth != depths[len(layers) - 1 - level]:
            raise ValueError(
                f"{shapes.prefix}output_blocks.{first_block}.1 has {up_depth} transformer blocks, unlike its "
                "down level; diffusers cannot represent this UNet"
            )
        up_types.append("CrossAttnUpBlock2D" if up_depth else "UpBlock2D")
        first_block += count + 1
    if shapes.count("output_blocks") != first_block:
        raise ValueError(f"{shapes.prefix}output_blocks: expected {first_block} blocks for {layers} layers per level")

    conv_in = shapes("input_blocks.0.0.weight")
    config = dict(reference)
    config.update(
        in_channels=conv_in[1],
        out_channels=shapes("out.2.weight")[0],
        block_out_channels=widths,
        layers_per_block=_uniform(layers),
        down_block_types=["CrossAttnDownBlock2D" if depth else "DownBlock2D" for depth in down_depths],
        up_block_types=up_types,
        transformer_layers_per_block=_uniform(depths),
        cross_attention_dim=shapes("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1],
        use_linear_projection=len(shapes("middle_block.1.proj_in.weight")) == 2,
        attention_head_dim=SD1_HEADS
        if heads_rule == "eight_heads"
        else [max(1, width // HEAD_WIDTH) for width in widths],
    )
    if pooled_dim is not None:
        config.update(_text_time_embedding(shapes, pooled_dim))
    return config


def _text_time_embedding(shapes: ShapeReader, pooled_dim: int) -> dict:
    """SDXL conditions on the pooled text embedding plus six Fourier-embedded size/crop numbers."""
    input_dim = shapes("label_emb.0.0.weight")[1]
    time_dim, remainder = divmod(input_dim - pooled_dim, 6)
    if remainder or time_dim <= 0:
        raise ValueError(
            f"{shapes.prefix}label_emb.0.0.weight takes {input_dim} inputs, which is not the pooled text width "
            f"{pooled_dim} plus six time embeddings"
        )
    return {
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": input_dim,
    }
