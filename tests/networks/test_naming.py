"""Kohya names of modules, both directions, and the module counts of the full-size SD1.5 and SDXL models."""

from __future__ import annotations

import pytest
from torch import nn

from library.networks import LoraNamer, LoraOptions, SgmNames, inject_lora
from library.networks.targets import UNET, index_modules

# (component, module path in the diffusers/transformers 5 model, name in the file): facts of the kohya format.
SD1_NAMES = [
    (UNET, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
     "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"),
    (UNET, "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_out.0",
     "lora_unet_down_blocks_2_attentions_1_transformer_blocks_0_attn2_to_out_0"),
    (UNET, "mid_block.attentions.0.proj_in", "lora_unet_mid_block_attentions_0_proj_in"),
    (UNET, "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj",
     "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj"),
    (UNET, "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
     "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2"),
    (UNET, "down_blocks.0.resnets.0.conv1", "lora_unet_down_blocks_0_resnets_0_conv1"),
    (UNET, "up_blocks.0.upsamplers.0.conv", "lora_unet_up_blocks_0_upsamplers_0_conv"),
    # transformers 5 CLIPTextModel has no text_model wrapper; the file always has it.
    (0, "encoder.layers.0.self_attn.q_proj", "lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
    (0, "encoder.layers.11.mlp.fc1", "lora_te_text_model_encoder_layers_11_mlp_fc1"),
]

SDXL_NAMES = [
    (UNET, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
     "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"),
    (UNET, "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
     "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2"),
    (UNET, "mid_block.attentions.0.proj_out", "lora_unet_middle_block_1_proj_out"),
    (UNET, "up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
     "lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_k"),
    (UNET, "up_blocks.1.attentions.2.proj_in", "lora_unet_output_blocks_5_1_proj_in"),
    (UNET, "down_blocks.0.resnets.0.conv1", "lora_unet_input_blocks_1_0_in_layers_2"),
    (UNET, "down_blocks.0.downsamplers.0.conv", "lora_unet_input_blocks_3_0_op"),
    (UNET, "down_blocks.1.resnets.0.conv_shortcut", "lora_unet_input_blocks_4_0_skip_connection"),
    (UNET, "mid_block.resnets.1.time_emb_proj", "lora_unet_middle_block_2_emb_layers_1"),
    (UNET, "up_blocks.0.upsamplers.0.conv", "lora_unet_output_blocks_2_2_conv"),
    (UNET, "up_blocks.2.resnets.2.conv2", "lora_unet_output_blocks_8_0_out_layers_3"),
    (0, "encoder.layers.0.self_attn.out_proj", "lora_te1_text_model_encoder_layers_0_self_attn_out_proj"),
    # CLIPTextModelWithProjection keeps the wrapper in transformers 5.
    (1, "text_model.encoder.layers.31.mlp.fc2", "lora_te2_text_model_encoder_layers_31_mlp_fc2"),
]


def _name(namer: LoraNamer, component, path: str) -> str:
    return namer.unet(path) if component == UNET else namer.text_encoder(component, path)


@pytest.mark.parametrize(("family_name", "cases"), [("sd1", SD1_NAMES), ("sdxl", SDXL_NAMES)])
def test_names_both_directions(full_size_meta, family_name, cases):
    family, components = full_size_meta(family_name)
    namer = LoraNamer(family, components.unet.config)
    index = index_modules(family, components.unet, components.text_encoders)
    for component, path, name in cases:
        assert _name(namer, component, path) == name
        module = components.unet if component == UNET else components.text_encoders[component]
        found, found_path = index[name]
        assert found_path == path and found is module.get_submodule(path)


def test_sgm_mapping_is_a_bijection_over_the_sdxl_unet(full_size_meta):
    family, components = full_size_meta("sdxl")
    sgm = SgmNames(components.unet.config)
    paths = [path for path, module in components.unet.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    renamed = [sgm.to_sgm(path) for path in paths]
    assert len(set(renamed)) == len(paths)
    assert [sgm.to_diffusers(name) for name in renamed] == paths


@pytest.mark.parametrize(
    ("sgm_path", "diffusers_path"),
    [
        ("input_blocks.4.1.transformer_blocks.0.attn1.to_q",
         "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
        ("input_blocks.3.0.op", "down_blocks.0.downsamplers.0.conv"),
        ("middle_block.2.emb_layers.1", "mid_block.resnets.1.time_emb_proj"),
        ("output_blocks.2.2.conv", "up_blocks.0.upsamplers.0.conv"),
        ("output_blocks.8.0.skip_connection", "up_blocks.2.resnets.2.conv_shortcut"),
    ],
)
def test_sgm_to_diffusers(full_size_meta, sgm_path, diffusers_path):
    _, components = full_size_meta("sdxl")
    assert SgmNames(components.unet.config).to_diffusers(sgm_path) == diffusers_path


@pytest.mark.parametrize("bad", ["input_blocks.99.1.proj_in", "middle_block.7.proj_in", "not_a_block.0"])
def test_sgm_rejects_paths_the_config_cannot_hold(full_size_meta, bad):
    _, components = full_size_meta("sdxl")
    with pytest.raises(ValueError, match="not an SGM"):
        SgmNames(components.unet.config).to_diffusers(bad)


@pytest.mark.parametrize(
    ("family_name", "options", "unet_count", "text_encoder_counts"),
    [
        ("sd1", LoraOptions(dim=4), 192, [72]),
        ("sd1", LoraOptions(dim=4, conv_dim=4), 278, [72]),
        ("sdxl", LoraOptions(dim=4), 722, [72, 192]),
    ],
)
def test_full_size_module_counts(full_size_meta, family_name, options, unet_count, text_encoder_counts):
    family, components = full_size_meta(family_name)
    network = inject_lora(family, components.unet, components.text_encoders, options)
    targets = list(network.targets.values())
    assert sum(target.is_unet for target in targets) == unet_count
    assert [sum(target.component == index for target in targets) for index in range(len(text_encoder_counts))] == (
        text_encoder_counts
    )
    assert len(network.modules) == unet_count + sum(text_encoder_counts)
