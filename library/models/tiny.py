"""Tiny models of the real architectures, built offline.

Tests and benchmarks run without downloading real checkpoints (2-24 GB), yet every code path must be the real one.
These builders make the exact diffusers/transformers classes a real SD1/SD2/SDXL/FLUX.1 model uses, with small
widths and deterministic random weights, and save them both as a diffusers folder and as an original-layout single
file (FLUX.1: a ComfyUI-style checkpoint; ``--split-dir`` also writes BFL's split files), so that tests go through
the same loader a user's model goes through. ``--full-size`` builds the real full-size architecture (random
weights) for benchmarks, ``--dtype bfloat16`` in half the memory.

Widths follow the conventions that single-file config inference relies on: GroupNorm with 32 groups, SD1 UNets
with 8 heads, later UNets with 64-wide heads, CLIP text encoders with 64-wide heads; FLUX.1 rotary axes that scale
from its 128-wide heads (a 32-wide head here).
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from library.models.families import FAMILY_NAMES, ModelFamily, get_family
from library.models.pipeline import assemble_pipeline, component_configs, component_modules, pipeline_scheduler
from library.models.t5_tokenizer import build_tiny_t5_tokenizer, tiny_t5_pieces
from library.models.tokenizer import build_clip_tokenizer

logger = logging.getLogger(__name__)

_TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [32, 32, 64, 64],  # four levels keep SD's 8x latent downsampling
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
}

_TINY_TEXT_ENCODER = {
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 1,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 1,
    "projection_dim": 64,
}

_TINY_SDXL_SECOND_ENCODER = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_attention_heads": 2,
    "projection_dim": 128,
}

_TINY_UNETS: dict[str, dict] = {
    "sd1": {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 2,
        "cross_attention_dim": 64,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    },
    "sd2": {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [64, 128, 128],
        "layers_per_block": 2,
        "cross_attention_dim": 64,
        "attention_head_dim": [1, 2, 2],
        "use_linear_projection": True,
        "norm_num_groups": 32,
    },
    "sdxl": {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 128],
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 1, 2],
        "cross_attention_dim": 192,  # 64 (first encoder) + 128 (second encoder)
        "attention_head_dim": [1, 1, 2],
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 176,  # 6 time ids x 8 + pooled width 128
        "norm_num_groups": 32,
    },
}
_TINY_UNETS["sd2-v"] = _TINY_UNETS["sd2"]

_TINY_FLUX_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,  # 16 latent channels packed 2x2
    "num_layers": 1,
    "num_single_layers": 2,
    "attention_head_dim": 32,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,  # the T5 width
    "pooled_projection_dim": 64,  # the CLIP-L width (its pooled output)
    "axes_dims_rope": [4, 14, 14],  # FLUX.1's (16, 56, 56) scaled to 32-wide heads
}

_TINY_T5 = {
    "d_model": 32,
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 2,
    "relative_attention_num_buckets": 32,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
    "use_cache": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}


def tiny_configs(family: ModelFamily) -> dict[str, dict]:
    """Config dicts of every component of the tiny model of ``family``."""
    vae = {**_TINY_VAE, "scaling_factor": family.latent_scaling_factor, "latent_channels": family.latent_channels}
    if family.latent_shift_factor:
        vae.update(shift_factor=family.latent_shift_factor, use_quant_conv=False, use_post_quant_conv=False)
    if family.denoiser == "transformer":
        denoiser = {**_TINY_FLUX_TRANSFORMER, "guidance_embeds": family.guidance_embedded}
    else:
        denoiser = copy.deepcopy(_TINY_UNETS[family.name])
    configs: dict[str, dict] = {family.denoiser: denoiser, "vae": vae}
    for spec in family.text_encoders:
        if spec.architecture == "T5EncoderModel":
            configs[spec.component] = {**_TINY_T5, "vocab_size": len(tiny_t5_pieces())}
        else:
            configs[spec.component] = {**_TINY_TEXT_ENCODER, "hidden_act": spec.hidden_act}
    if family.name == "sdxl":
        # diffusers tells SDXL's encoders apart by width, so the second one must be wider, as in the real model.
        configs["text_encoder_2"].update(_TINY_SDXL_SECOND_ENCODER)
    return configs


def full_size_configs(family: ModelFamily) -> dict[str, dict]:
    """Config dicts of the real full-size architecture of ``family`` (the per-family reference configs)."""
    from library.models.single_file import reference_configs

    return reference_configs(family.name)


@dataclass
class Components:
    """The modules of a model, as the loaders and trainers pass them around (``unet``: the family's denoiser)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]


def build_components(
    family: ModelFamily, configs: dict[str, dict], seed: int, dtype: torch.dtype = torch.float32
) -> Components:
    """Instantiate every component from config dicts with a deterministic random init, in ``dtype`` (built in it
    directly: a full-size SDXL in fp32 and a bf16 copy would not fit beside each other in a small machine)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return _build_components(family, configs, seed)
    finally:
        torch.set_default_dtype(previous)


def _build_components(family: ModelFamily, configs: dict[str, dict], seed: int) -> Components:
    from library.models.single_file.components import instantiate

    def seeded(offset: int, model_class: str, name: str) -> torch.nn.Module:
        torch.manual_seed(seed + offset)
        return instantiate(model_class, _strip_meta(configs[name])).eval()

    unet = seeded(0, family.denoiser_class, family.denoiser)
    vae = seeded(1, "AutoencoderKL", "vae")
    text_encoders = [
        seeded(2 + index, spec.architecture, spec.component) for index, spec in enumerate(family.text_encoders)
    ]
    return Components(unet=unet, vae=vae, text_encoders=text_encoders)


def _strip_meta(config: dict) -> dict:
    """Drop bookkeeping keys (``_class_name``, ``architectures``…) that the constructors do not take."""
    return {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}


def tiny_tokenizers(family: ModelFamily) -> list:
    """The built-in tokenizers of a tiny model: CLIP's real vocabulary, the tiny T5 Unigram vocabulary."""
    return [
        build_tiny_t5_tokenizer(spec.max_length) if spec.tokenizer == "t5" else build_clip_tokenizer(spec.pad_token)
        for spec in family.text_encoders
    ]


def build_pipeline(family: ModelFamily, components: Components):
    """Wrap components into the family's diffusers pipeline, with tokenizers and its sampling scheduler."""
    tokenizers = tiny_tokenizers(family)
    return assemble_pipeline(
        family, components.unet, components.vae, components.text_encoders, tokenizers, pipeline_scheduler(family)
    )


def component_state_dicts(family: ModelFamily, components: Components) -> dict[str, dict[str, torch.Tensor]]:
    modules = component_modules(family, components.unet, components.vae, components.text_encoders)
    return {name: module.state_dict() for name, module in modules.items()}


def write_tiny_model(
    family_name: str,
    out_dir: Path,
    single_file: Path | None = None,
    seed: int = 0,
    full_size: bool = False,
    split_dir: Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Build a model of ``family_name`` in ``dtype`` and save it as a diffusers folder (and optionally a single
    file, and for a family that comes split, its split files in ``split_dir``)."""
    from library.models.single_file import save_original_checkpoint, save_split_files

    family = get_family(family_name)
    configs = full_size_configs(family) if full_size else tiny_configs(family)
    components = build_components(family, configs, seed, dtype)
    pipeline = build_pipeline(family, components)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    logger.info("wrote %s diffusers folder to %s", family.name, out_dir)
    if single_file is not None:
        single_file.parent.mkdir(parents=True, exist_ok=True)
        save_original_checkpoint(
            single_file,
            family.name,
            component_state_dicts(family, components),
            component_configs(component_modules(family, components.unet, components.vae, components.text_encoders)),
            metadata={"modelspec.title": f"tiny {family.name} (random weights)"},
        )
        logger.info("wrote %s single file to %s", family.name, single_file)
    if split_dir is not None:
        modules = component_modules(family, components.unet, components.vae, components.text_encoders)
        save_split_files(split_dir, family.name, component_state_dicts(family, components), component_configs(modules))


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m library.models.tiny",
        description="Build a tiny (or --full-size) randomly initialised base model offline.",
    )
    parser.add_argument("--family", choices=FAMILY_NAMES, required=True)
    parser.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    parser.add_argument("--single-file", type=Path, help="also write an original-layout .safetensors here")
    parser.add_argument(
        "--split-dir", type=Path, help="FLUX.1: also write BFL's split files (transformer, ae, clip_l, t5xxl) here"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init (same seed, same weights)")
    parser.add_argument(
        "--full-size", action="store_true", help="the real full-size architecture (for benchmarks)"
    )
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="dtype of the weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.split_dir is not None and not get_family(args.family).split_file_keys:
        parser.error(f"--split-dir: {args.family} does not come as split files")
    write_tiny_model(args.family, args.out, args.single_file, args.seed, args.full_size, args.split_dir,
                     _DTYPES[args.dtype])
    return 0


if __name__ == "__main__":
    sys.exit(main())
