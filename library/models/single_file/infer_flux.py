"""Infer FLUX.1 transformer and T5 encoder configs from the shapes of BFL-layout / T5 weights.

Nearly everything shows in shapes: depths from the numbered blocks, widths from the embedders, the attention head
width from the q/k RMSNorm scales, T5's heads from its relative-attention bias table. Two facts do not, and follow
FLUX.1's conventions: the MLP ratio (4, fixed in diffusers) and the rotary axes (16, 56, 56) of a 128-wide head,
scaled to the head width of a smaller model.
"""

from __future__ import annotations

from library.models.single_file.shape_reader import ShapeReader

FLUX_HEAD_WIDTH = 128
FLUX_ROPE_AXES = (16, 56, 56)


def rope_axes(head_width: int) -> list[int]:
    """FLUX.1's rotary axes scaled to ``head_width``; each must stay even and they must add up to the width."""
    axes = [axis * head_width // FLUX_HEAD_WIDTH for axis in FLUX_ROPE_AXES]
    if sum(axes) != head_width or any(axis % 2 for axis in axes):
        raise ValueError(
            f"attention heads {head_width} wide do not divide into FLUX.1's rotary axes; set model.config_dir to a "
            "diffusers folder with this model's transformer config"
        )
    return axes


def infer_flux_transformer_config(shapes: ShapeReader, reference: dict) -> dict:
    head_width = shapes("double_blocks.0.img_attn.norm.query_norm.scale")[0]
    width, in_channels = shapes("img_in.weight")
    config = dict(reference)
    config.update(
        in_channels=in_channels,
        out_channels=shapes("final_layer.linear.weight")[0],
        num_layers=shapes.count("double_blocks"),
        num_single_layers=shapes.count("single_blocks"),
        attention_head_dim=head_width,
        num_attention_heads=width // head_width,
        joint_attention_dim=shapes("txt_in.weight")[1],
        pooled_projection_dim=shapes("vector_in.in_layer.weight")[1],
        guidance_embeds=shapes.has("guidance_in.in_layer.weight"),
        axes_dims_rope=rope_axes(head_width),
    )
    return config


def infer_t5_config(shapes: ShapeReader, reference: dict) -> dict:
    vocab_size, width = shapes("shared.weight")
    buckets, heads = shapes("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    config = dict(reference)
    config.update(
        vocab_size=vocab_size,
        d_model=width,
        num_layers=shapes.count("encoder.block"),
        num_heads=heads,
        d_kv=shapes("encoder.block.0.layer.0.SelfAttention.q.weight")[0] // heads,
        d_ff=shapes("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")[0],
        relative_attention_num_buckets=buckets,
    )
    return config
