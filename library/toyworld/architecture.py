"""The toy-world base model's architecture: Stable Diffusion 1's classes, at widths a 2-core CPU can pretrain.

The same component classes and SD1 conventions as a real SD1.5 checkpoint (8 UNet heads, GroupNorm with 32 groups,
64-wide text-encoder heads, a four-level VAE with SD's 8x latent downsampling, the real CLIP vocabulary), so the
single-file loader infers these configs from the weights like any SD1 model's. Small enough that the weights in
fp16 fit in about 20 MB; most of the text encoder is its 49,408-row token table.
"""

from __future__ import annotations

from library.models.families import get_family

FAMILY = "sd1"

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [64, 64, 64, 64],  # 2 channels per norm group at full size: 1 would normalise colour away
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
}

UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [64, 128, 128],
    "layers_per_block": 1,
    "cross_attention_dim": 64,
    "attention_head_dim": 8,  # SD1's diffusers configs mean 8 heads by this
    "norm_num_groups": 32,
}

TEXT_ENCODER_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
    "projection_dim": 64,
}


def toy_configs() -> dict[str, dict]:
    """Config dicts of every component, in the form :func:`library.models.tiny.build_components` takes."""
    family = get_family(FAMILY)
    (spec,) = family.text_encoders
    return {
        "unet": dict(UNET_CONFIG),
        "vae": {**VAE_CONFIG, "scaling_factor": family.latent_scaling_factor},
        spec.component: {**TEXT_ENCODER_CONFIG, "hidden_act": spec.hidden_act},
    }
