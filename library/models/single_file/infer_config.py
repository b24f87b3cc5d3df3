"""Infer diffusers/transformers configs of every component from an original-layout state dict.

Everything visible in shapes is read from shapes; the rest comes from the family's reference config (the real
full-size model's config, shipped as JSON), which the Stable Diffusion conventions make safe to reuse: GroupNorm
with 32 groups, 64-wide text encoder heads, the family's activation and latent scaling.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from library.models.families import ModelFamily, get_family
from library.models.single_file.components import COMPONENTS, component_layouts, with_text_model_wrapper
from library.models.single_file.infer_flux import infer_flux_transformer_config, infer_t5_config
from library.models.single_file.infer_unet import infer_unet_config
from library.models.single_file.shape_reader import ShapeReader

_REFERENCE_DIR = Path(__file__).parent / "reference_configs"
TEXT_HEAD_WIDTH = 64

# Where the width, vocabulary, positions, blocks and MLP of a text encoder show, per layout.
_TEXT_NAMES = {
    "clip": {
        "token": "text_model.embeddings.token_embedding.weight",
        "positions": "text_model.embeddings.position_embedding.weight",
        "blocks": "text_model.encoder.layers",
        "mlp_in": "text_model.encoder.layers.0.mlp.fc1.weight",
    },
    "open_clip": {
        "token": "token_embedding.weight",
        "positions": "positional_embedding",
        "blocks": "transformer.resblocks",
        "mlp_in": "transformer.resblocks.0.mlp.c_fc.weight",
    },
}


@functools.cache
def _load_reference(family: str) -> dict[str, dict]:
    get_family(family)  # rejects unknown names with the list of valid ones
    return json.loads((_REFERENCE_DIR / f"{family}.json").read_text(encoding="utf-8"))


def reference_configs(family: str) -> dict[str, dict]:
    """Config dicts of the real full-size model of ``family`` (a fresh copy the caller may change)."""
    return copy.deepcopy(_load_reference(family))


def infer_vae_config(shapes: ShapeReader, reference: dict) -> dict:
    levels = shapes.count("encoder.down")
    config = dict(reference)
    config.update(
        in_channels=shapes("encoder.conv_in.weight")[1],
        out_channels=shapes("decoder.conv_out.weight")[0],
        latent_channels=shapes("decoder.conv_in.weight")[1],
        block_out_channels=[shapes(f"encoder.down.{level}.block.0.conv2.weight")[0] for level in range(levels)],
        layers_per_block=shapes.count("encoder.down.0.block"),
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
    )
    return config


def _infer_text_config(shapes: ShapeReader, kind: str, reference: dict, architecture: str, hidden_act: str) -> dict:
    names = _TEXT_NAMES[kind]
    vocab_size, hidden_size = shapes(names["token"])
    blocks = shapes.count(names["blocks"])
    if architecture == "CLIPTextModelWithProjection":
        projection_dim = shapes("text_projection")[1]
    else:
        # A plain CLIPTextModel has no projection; the value mirrors CLIP-L, where both widths are equal.
        projection_dim = hidden_size
        if kind == "open_clip" and shapes.has("text_projection"):
            blocks -= 1  # a complete OpenCLIP tower: SD2 conditions on its penultimate block
    config = dict(reference)
    config.update(
        architectures=[architecture],
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=shapes(names["mlp_in"])[0],
        num_hidden_layers=blocks,
        num_attention_heads=max(1, hidden_size // TEXT_HEAD_WIDTH),
        max_position_embeddings=shapes(names["positions"])[0],
        projection_dim=projection_dim,
        hidden_act=hidden_act,
    )
    return config


def infer_configs(family: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """Config dict per component of ``family`` for the weights in ``state_dict`` (original layout)."""
    model_family = get_family(family)
    reference = reference_configs(family)
    state_dict = with_text_model_wrapper(family, state_dict)
    layouts = {layout.name: layout for layout in component_layouts(family)}

    def reader(name: str) -> ShapeReader:
        return ShapeReader(state_dict, layouts[name].prefix, name)

    configs = {}
    for spec in model_family.text_encoders:
        kind = layouts[spec.component].kind
        configs[spec.component] = (
            infer_t5_config(reader(spec.component), reference[spec.component])
            if kind == "t5"
            else _infer_text_config(
                reader(spec.component), kind, reference[spec.component], spec.architecture, spec.hidden_act
            )
        )
    configs["vae"] = infer_vae_config(reader("vae"), reference["vae"])
    if model_family.original_layout == "bfl":
        configs["transformer"] = infer_flux_transformer_config(reader("transformer"), reference["transformer"])
    else:
        configs["unet"] = _infer_sd_unet(model_family, configs, reader("unet"), reference["unet"])
    return {name: configs[name] for name in COMPONENTS if name in configs}


def _infer_sd_unet(model_family: ModelFamily, configs: dict, shapes: ShapeReader, reference: dict) -> dict:
    pooled_dim = next(
        (
            configs[spec.component]["projection_dim"]
            for spec in model_family.text_encoders
            if spec.architecture == "CLIPTextModelWithProjection"
        ),
        None,
    )
    return infer_unet_config(shapes, reference, model_family.unet_heads_rule, pooled_dim)
