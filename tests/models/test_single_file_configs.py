"""Configs inferred from original-layout weights equal the configs the weights were made from.

Tiny models check the generic parts (levels, depths, widths); the real SD1.5 / SD2.1 / SDXL architectures are
checked on the meta device (shapes only, no memory), against the reference configs the loader ships.
"""

from __future__ import annotations

import pytest
import torch

from library.models.families import get_family
from library.models.single_file import diffusers_to_original, infer_configs, reference_configs
from library.models.single_file.components import component_layouts, instantiate
from library.models.tiny import build_components, component_state_dicts, tiny_configs

FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")
_BOOKKEEPING = {"architectures", "transformers_version", "dtype", "torch_dtype", "name_or_path"}


def _architecture(model_class: str, config: dict, ignore: set[str]) -> dict:
    """The module's full config with defaults filled in, minus bookkeeping and ``ignore``d fields."""
    with torch.device("meta"):
        module = instantiate(model_class, config)
    full = dict(module.config) if isinstance(module.config, dict) else module.config.to_dict()
    return {
        key: value
        for key, value in full.items()
        if not key.startswith("_") and key not in _BOOKKEEPING and key not in ignore
    }


def _assert_same_architecture(family: str, expected: dict, inferred: dict, ignore: dict[str, set[str]]) -> None:
    assert set(inferred) == set(expected)
    for layout in component_layouts(family):
        skipped = ignore.get(layout.name, set())
        want = _architecture(layout.model_class, expected[layout.name], skipped)
        got = _architecture(layout.model_class, inferred[layout.name], skipped)
        assert got == want, layout.name
        assert inferred[layout.name].get("_class_name", layout.model_class) == layout.model_class
        assert inferred[layout.name].get("architectures", [layout.model_class]) == [layout.model_class]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_configs_are_recovered(family):
    model_family = get_family(family)
    configs = tiny_configs(model_family)
    state_dicts = component_state_dicts(model_family, build_components(model_family, configs, seed=0))
    inferred = infer_configs(family, diffusers_to_original(family, state_dicts, configs))
    # Resolution and attention upcasting do not show in weights; they follow the family's full-size model.
    ignore = {"unet": {"sample_size", "upcast_attention"}, "vae": {"sample_size"}}
    _assert_same_architecture(family, configs, inferred, ignore)


def _meta_state_dicts(family: str, configs: dict) -> dict:
    state_dicts = {}
    for layout in component_layouts(family):
        with torch.device("meta"):
            state_dicts[layout.name] = instantiate(layout.model_class, configs[layout.name]).state_dict()
    return state_dicts


# Keys and shapes as they appear in the released full-size checkpoints.
_KNOWN_KEYS = {
    "sd1": {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.middle_block.2.emb_layers.1.weight": (1280, 1280),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    },
    "sd2-v": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_bias": (3072,),
        "cond_stage_model.model.transformer.resblocks.23.mlp.c_proj.weight": (1024, 4096),
        "cond_stage_model.model.text_projection": (1024, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        "cond_stage_model.model.ln_final.bias": (1024,),
    },
    "sdxl": {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight": (640, 640),
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    },
}
_KNOWN_KEYS["sd2"] = _KNOWN_KEYS["sd2-v"]
# Tensor counts of the released files, minus what is not a weight: position_ids buffers (SD1, SDXL) and
# OpenCLIP's logit_scale (SD2, SDXL). SD1.5: 1131 keys; SDXL base 1.0: 2515 keys.
_KNOWN_COUNTS = {"sd1": 1131 - 1, "sdxl": 2515 - 2}


@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_layout_and_configs(family):
    reference = reference_configs(family)
    original = diffusers_to_original(family, _meta_state_dicts(family, reference), reference)

    for key, shape in _KNOWN_KEYS[family].items():
        assert tuple(original[key].shape) == shape, key
    if family in _KNOWN_COUNTS:
        assert len(original) == _KNOWN_COUNTS[family]

    inferred = infer_configs(family, original)
    # A CLIPTextModel has no projection layer: its projection_dim is a dormant field.
    ignore = {
        spec.component: {"projection_dim"}
        for spec in get_family(family).text_encoders
        if spec.architecture == "CLIPTextModel"
    }
    _assert_same_architecture(family, reference, inferred, ignore)


def test_reference_configs_are_copies():
    first = reference_configs("sd1")
    first["unet"]["block_out_channels"].append(1)
    assert reference_configs("sd1")["unet"]["block_out_channels"] == [320, 640, 1280, 1280]
