"""FLUX.1 LoRA files: the kohya/BFL layout (q, k, v fused), the diffusers layout, and other programs reading them.

The adapters are peft layers on the tiny FluxTransformer2DModel's diffusers modules, saved through
``LoraNetwork.save``. diffusers' ``FluxPipeline.load_lora_weights`` must change the transformer's output exactly as
our own merge does; diffusers' kohya converter must consume a file at FLUX.1-dev's real shapes whole.
"""

from __future__ import annotations

import json

import pytest
import torch
from flux_lora_helpers import block_linears, flux_network, tiny_flux, transformer_output
from safetensors.torch import save_file
from torch import nn

from library.networks import LoraFileError, LoraOptions, merge_lora_into, read_lora_file
from library.models.single_file.bfl_layout import bfl_linear_modules
from library.networks.bfl_lora import fuse
from library.networks.lora_file import ModuleWeights, modules_tensors, read_tensors_file, split_modules
from library.networks.lora_layouts import adapter_tensors, kohya_file_tensors, peft_path
from library.networks.naming import flatten

DOUBLE = ("img_attn_qkv", "img_attn_proj", "img_mlp_0", "img_mlp_2", "img_mod_lin")
SINGLE = ("linear1", "linear2", "modulation_lin")


def _saved(tmp_path, save_format: str, **network_kwargs):
    family, components = tiny_flux()
    options = LoraOptions(dim=2, alpha=1.0, save_format=save_format)
    network = flux_network(family, components, options, **network_kwargs)
    path = tmp_path / f"{save_format}.safetensors"
    network.save(path, "float", {"ss_output_name": "flux"})
    return network, path


def _states_equal(first, second) -> None:
    expected, actual = first.state_dict_kohya(), second.state_dict_kohya()
    assert set(expected) == set(actual)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


def test_kohya_layout_fuses_qkv_in_bfl_names_and_reads_back_exactly(tmp_path):
    network, path = _saved(tmp_path, "kohya")
    tensors, _ = read_lora_file(path)
    modules = split_modules(tensors, str(path))
    expected = {f"lora_unet_double_blocks_0_{side}{name[3:]}" for side in ("img", "txt") for name in DOUBLE}
    expected |= {f"lora_unet_single_blocks_{index}_{name}" for index in (0, 1) for name in SINGLE}
    assert {name for name in modules if name.startswith("lora_unet_")} == expected
    assert all(name.startswith("lora_te1_text_model_encoder_layers_") for name in modules if "unet" not in name)

    qkv = modules["lora_unet_double_blocks_0_img_attn_qkv"]
    assert (tuple(qkv.down.shape), tuple(qkv.up.shape), qkv.alpha) == ((6, 64), (192, 6), 3.0)
    linear1 = modules["lora_unet_single_blocks_1_linear1"]
    assert (tuple(linear1.down.shape), tuple(linear1.up.shape), linear1.alpha) == ((8, 64), (448, 8), 4.0)
    # each part's rows of the fused update are that adapter's own update at its own scale (alpha / rank = 0.5)
    fused_update = linear1.up @ linear1.down * linear1.scale
    mlp = network.modules["lora_unet_single_transformer_blocks_1_proj_mlp"]
    own = mlp.lora_B["default"].weight @ mlp.lora_A["default"].weight * 0.5
    torch.testing.assert_close(fused_update[192:], own, rtol=0, atol=1e-6)

    family, components = tiny_flux()
    fresh = flux_network(family, components, LoraOptions(dim=2, alpha=1.0), seed=7)
    fresh.load_file(path)
    _states_equal(network, fresh)


def test_diffusers_layout_names_modules_by_path_and_reads_back_exactly(tmp_path):
    network, path = _saved(tmp_path, "diffusers")
    tensors, metadata = read_tensors_file(path)
    paths = {target.path for target in network.targets.values() if target.is_unet}
    downs = {key.removesuffix(".lora_A.weight") for key in tensors if key.endswith(".lora_A.weight")}
    assert {key for key in downs if key.startswith("transformer.")} == {f"transformer.{path}" for path in paths}
    assert "transformer.transformer_blocks.0.attn.to_q.lora_B.weight" in tensors
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in tensors
    # the alphas are each component's LoraConfig in the metadata, as diffusers' save_lora_weights writes them
    assert not any(key.endswith(".alpha") for key in tensors)
    config = json.loads(metadata["lora_adapter_metadata"])
    transformer = (config["transformer.r"], config["transformer.lora_alpha"], config["transformer.alpha_pattern"])
    assert transformer == (2, 1.0, {})
    assert "single_transformer_blocks.0.proj_mlp" in config["transformer.target_modules"]
    assert "encoder.layers.0.self_attn.q_proj" in config["text_encoder.target_modules"]

    family, components = tiny_flux()
    fresh = flux_network(family, components, LoraOptions(dim=2, alpha=1.0), seed=7)
    fresh.load_file(path)
    _states_equal(network, fresh)


def _sd_scripts_qkv(rank: int, seed: int = 3) -> ModuleWeights:
    """A fused q/k/v module as sd-scripts trains it: one down shared by the parts, a full up."""
    generator = torch.Generator().manual_seed(seed)
    return ModuleWeights(torch.randn(rank, 64, generator=generator), torch.randn(192, rank, generator=generator),
                         float(rank) / 2, None)


def _with_module(path, tmp_path, name: str, weights: ModuleWeights):
    tensors, _ = read_tensors_file(path)
    modules = split_modules(tensors, str(path))
    modules[name] = weights
    out = tmp_path / "other.safetensors"
    save_file(modules_tensors(modules), str(out))
    return out


def test_a_shared_down_file_merges_as_its_fused_update_and_loads_when_the_rank_fits(tmp_path):
    _, path = _saved(tmp_path, "kohya")
    name = "lora_unet_double_blocks_0_img_attn_qkv"
    shared = _sd_scripts_qkv(rank=2)
    other = _with_module(path, tmp_path, name, shared)

    family, components = tiny_flux()
    attention = components.unet.transformer_blocks[0].attn
    before = torch.cat([attention.to_q.weight, attention.to_k.weight, attention.to_v.weight]).clone()
    merge_lora_into(family, components.unet, components.text_encoders, read_tensors_file(other)[0], 1.0, str(other))
    after = torch.cat([attention.to_q.weight, attention.to_k.weight, attention.to_v.weight])
    torch.testing.assert_close(after - before, shared.up @ shared.down * shared.scale, rtol=1e-5, atol=1e-5)

    _, components = tiny_flux()
    network = flux_network(family, components, LoraOptions(dim=2, alpha=1.0), seed=7)
    network.load_file(other)  # rank 2 shared by q, k, v: each part is (down, its rows of up), exactly
    loaded = network.modules["lora_unet_transformer_blocks_0_attn_to_k"]
    assert torch.equal(loaded.lora_A["default"].weight, shared.down)
    assert torch.equal(loaded.lora_B["default"].weight, shared.up[64:128])


def test_a_fused_module_that_does_not_split_to_the_network_rank_is_refused_in_one_line(tmp_path):
    _, path = _saved(tmp_path, "kohya")
    other = _with_module(path, tmp_path, "lora_unet_double_blocks_0_img_attn_qkv", _sd_scripts_qkv(rank=6))
    family, components = tiny_flux()
    network = flux_network(family, components, LoraOptions(dim=2, alpha=1.0), seed=7)
    with pytest.raises(LoraFileError, match=r"attn_to_q\.lora_down\.weight has shape \(6, 64\).*set network dim"):
        network.load_file(other)


def test_unequal_or_partial_parts_are_refused_when_fusing():
    def pair(rank: int, alpha: float) -> ModuleWeights:
        return ModuleWeights(torch.ones(rank, 64), torch.ones(64, rank), alpha, None)

    names = [f"lora_unet_transformer_blocks_0_attn_to_{part}" for part in "qkv"]
    with pytest.raises(LoraFileError, match="img_attn_qkv fuses modules of unequal rank/alpha"):
        fuse({names[0]: pair(2, 1.0), names[1]: pair(4, 1.0), names[2]: pair(2, 1.0)}, "lora_unet_", "LoRA")
    with pytest.raises(LoraFileError, match="to_v has no adapter.*save_format = 'diffusers'"):
        fuse({names[0]: pair(2, 1.0), names[1]: pair(2, 1.0)}, "lora_unet_", "LoRA")


@pytest.mark.parametrize("names", ["diffusers", "bfl"])
def test_diffusion_model_prefixed_files_read_like_ours(tmp_path, names):
    """ai-toolkit's and ComfyUI's layout: the transformer under ``diffusion_model.``, in diffusers' or BFL's names."""
    network, path = _saved(tmp_path, "diffusers" if names == "diffusers" else "kohya")
    tensors, _ = read_tensors_file(path)
    if names == "diffusers":
        other = {
            key.replace("transformer.", "diffusion_model.", 1): value
            for key, value in tensors.items()
            if key.startswith("transformer.")
        }
        other |= {  # with the alphas as 0-dim tensors, as those files (and ours before) hold them
            key.replace(".lora_A.weight", ".alpha"): torch.tensor(1.0)
            for key in other
            if key.endswith(".lora_A.weight")
        }
    else:
        dotted = {flatten("lora_unet_", module.bfl): module.bfl for module in bfl_linear_modules(1, 2)}
        endings = {".lora_down.weight": ".lora_A.weight", ".lora_up.weight": ".lora_B.weight", ".alpha": ".alpha"}
        other = {}
        for key, value in tensors.items():
            name, _, ending = key.partition(".")
            if name in dotted:
                other[f"diffusion_model.{dotted[name]}{endings['.' + ending]}"] = value
        assert "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight" in other
    read = adapter_tensors(network.family, other, "other")
    ours = {key: value for key, value in network.state_dict_kohya().items() if key.startswith("lora_unet_")}
    assert set(read) == set(ours)
    assert all(torch.equal(read[key], ours[key]) for key in ours)


def _clip_output(encoder: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return encoder(torch.tensor([[49406, 320, 1125, 539, 49407]])).last_hidden_state


@pytest.mark.parametrize(
    ("save_format", "transformer_paths"),
    [
        ("diffusers", block_linears),
        # diffusers' kohya converter hard-codes FLUX.1's 3072-wide single blocks: the tiny model's single blocks
        # cannot go through it, the real shapes are checked in the test below
        ("kohya", lambda path: path.startswith("transformer_blocks.")),
    ],
    ids=["diffusers-layout", "kohya-layout"],
)
def test_flux_pipeline_load_lora_weights_changes_outputs_as_our_merge(tmp_path, save_format, transformer_paths):
    from library.models.tiny import build_pipeline

    _, path = _saved(tmp_path, save_format, transformer_paths=transformer_paths)
    family, base = tiny_flux()
    base_output = transformer_output(base.unet)

    _, ours = tiny_flux()
    tensors, metadata = read_tensors_file(path)
    merged = merge_lora_into(family, ours.unet, ours.text_encoders, tensors, 1.0, str(path), metadata)
    assert merged > 0

    _, theirs = tiny_flux()
    pipeline = build_pipeline(family, theirs)
    pipeline.load_lora_weights(str(path))
    expected = transformer_output(ours.unet)
    assert not torch.allclose(expected, base_output, atol=1e-3)  # the LoRA does change the output
    torch.testing.assert_close(transformer_output(pipeline.transformer), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_clip_output(pipeline.text_encoder), _clip_output(ours.text_encoders[0]),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shared_down", [False, True], ids=["ours-block-diagonal", "sd-scripts-shared-down"])
def test_diffusers_kohya_converter_reads_a_full_size_file_whole(full_size_meta, shared_down):
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

    family, model = full_size_meta("flux1-dev")
    generator = torch.Generator().manual_seed(0)
    held: dict[str, ModuleWeights] = {}
    owners = {"lora_unet_": (model.unet, None), "lora_te1_": (model.text_encoders[0], 0)}
    for prefix, (root, index) in owners.items():
        for path, module in root.named_modules():
            wanted = block_linears(path) if index is None else ".layers." in f".{path}"
            if isinstance(module, nn.Linear) and wanted:
                name = (prefix + path if index is None else prefix + "text_model." + path).replace(".", "_")
                held[name] = ModuleWeights(torch.randn(1, module.in_features, generator=generator),
                                           torch.randn(module.out_features, 1, generator=generator), 0.5, None)
    tensors = kohya_file_tensors(family, modules_tensors(held), "full-size")
    if shared_down:  # sd-scripts: fused modules share one down across their parts, rank 1, full up
        for key in [key for key in tensors if key.endswith(("qkv.lora_down.weight", "linear1.lora_down.weight"))]:
            tensors[key] = tensors[key][:1].clone()
            up = key.replace("lora_down", "lora_up")
            tensors[up] = tensors[up].sum(dim=1, keepdim=True)
            tensors[key.replace(".lora_down.weight", ".alpha")] = torch.tensor(0.5)
    expected = adapter_tensors(family, tensors, "full-size")

    # a copy of every tensor: the converter scales the text encoder's in place
    converted = _convert_kohya_flux_lora_to_diffusers({key: value.clone() for key, value in tensors.items()})
    # the text encoder's keys come out in diffusers' older naming, which its text-encoder loader converts so:
    text = {key: value for key, value in converted.items() if key.startswith("text_encoder.")}
    converted = {key: value for key, value in converted.items() if key not in text}
    converted.update(convert_state_dict_to_peft(convert_state_dict_to_diffusers(text)))
    modules = {key.removesuffix(".lora_A.weight") for key in converted if key.endswith(".lora_A.weight")}
    components = {"transformer": model.unet, "text_encoder": model.text_encoders[0]}
    expected_modules = split_modules(expected, "full-size")
    assert len(modules) == len(expected_modules) == len(held)  # every file module consumed, every part produced
    for module_path in modules:
        component, _, path = module_path.partition(".")
        module = components[component].get_submodule(path.removeprefix("text_model."))  # a real module
        down, up = converted[module_path + ".lora_A.weight"], converted[module_path + ".lora_B.weight"]
        assert (down.shape[1], up.shape[0]) == (module.in_features, module.out_features)
        name = ("lora_unet_" if component == "transformer" else "lora_te1_") + path.replace(".", "_")
        ours = expected_modules[name]
        probe = torch.randn(down.shape[1], 2, generator=generator)  # the updates compared on a probe: cheap
        torch.testing.assert_close(up @ (down @ probe), ours.up @ (ours.down @ probe) * ours.scale, rtol=1e-5,
                                   atol=1e-5, msg=module_path)
        assert peft_path(family, None if component == "transformer" else 0, path.removeprefix("text_model.")) == \
            module_path
