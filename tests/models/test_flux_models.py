"""FLUX.1 tiny models: built offline, saved as a diffusers folder, as BFL split files and as one ComfyUI-style
checkpoint, and loaded back each way to the same weights (the transformer's output is compared)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "networks"))
from flux_lora_helpers import transformer_output  # noqa: E402

from library.models.detect import detect_original_family
from library.models.errors import ModelLoadError
from library.models.families import FLUX1_DEV, FLUX1_SCHNELL
from library.models.loader import load_base_model
from library.models.pipeline import component_configs, component_modules
from library.models.sizes import read_model_sizes
from library.models.tensor_stream import StreamedTensors
from library.models.tiny import build_components, build_pipeline, component_state_dicts, tiny_configs

CAPTION = "a photo of a sks dog"


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """The tiny FLUX.1-dev model and its three saved forms."""
    from library.models.single_file import save_original_checkpoint, save_split_files

    root = tmp_path_factory.mktemp("flux")
    components = build_components(FLUX1_DEV, tiny_configs(FLUX1_DEV), seed=0)
    build_pipeline(FLUX1_DEV, components).save_pretrained(root / "diffusers", safe_serialization=True)
    state_dicts = component_state_dicts(FLUX1_DEV, components)
    configs = component_configs(component_modules(FLUX1_DEV, components.unet, components.vae, components.text_encoders))
    save_original_checkpoint(root / "comfy.safetensors", FLUX1_DEV.name, state_dicts, configs)
    split = save_split_files(root / "split", FLUX1_DEV.name, state_dicts, configs)
    return components, root, split


def _split_options(split):
    return {option: path for option, path in split.items() if option}


@pytest.mark.parametrize("form", ["diffusers", "comfy", "split"])
def test_every_form_loads_the_same_model(flux, form):
    components, root, split = flux
    if form == "diffusers":
        model = load_base_model(root / "diffusers")
    elif form == "comfy":
        model = load_base_model(root / "comfy.safetensors")
    else:
        model = load_base_model(split[""], split_files=_split_options(split))
    assert model.family is FLUX1_DEV
    assert type(model.unet).__name__ == "FluxTransformer2DModel"
    assert torch.equal(transformer_output(model.unet), transformer_output(components.unet))
    for loaded, built in zip([model.vae, *model.text_encoders], [components.vae, *components.text_encoders]):
        assert loaded.state_dict().keys() == built.state_dict().keys()
        assert all(torch.equal(loaded.state_dict()[key], value) for key, value in built.state_dict().items())
    assert type(model.noise_scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_tokenizers_reload_offline_with_the_built_in_ids(flux):
    _, root, split = flux
    from_folder = load_base_model(root / "diffusers")
    from_files = load_base_model(split[""], split_files=_split_options(split))
    assert [type(tokenizer).__name__ for tokenizer in from_folder.tokenizers] == ["CLIPTokenizer", "T5Tokenizer"]
    t5 = from_folder.tokenizers[1]
    assert t5.model_max_length == 512
    ids = t5(CAPTION).input_ids
    assert ids == from_files.tokenizers[1](CAPTION).input_ids
    assert ids[-1] == t5.eos_token_id and t5.unk_token_id not in ids
    assert from_folder.tokenizers[0](CAPTION).input_ids == from_files.tokenizers[0](CAPTION).input_ids
    assert max(ids) < from_folder.text_encoders[1].config.vocab_size


def test_bfl_transformer_file_has_the_fused_layout(flux):
    _, _, split = flux
    with StreamedTensors(split[""]) as tensors:
        keys = set(tensors)
        qkv = tensors.shapes["double_blocks.0.img_attn.qkv.weight"].shape
        linear1 = tensors.shapes["single_blocks.0.linear1.weight"].shape
    width = 64
    assert qkv == (3 * width, width) and linear1 == (3 * width + 4 * width, width)
    assert {"img_in.weight", "txt_in.weight", "time_in.in_layer.weight", "vector_in.in_layer.weight",
            "guidance_in.in_layer.weight", "final_layer.adaLN_modulation.1.weight"} <= keys
    assert not any(key.startswith("transformer_blocks") for key in keys)


def test_dev_and_schnell_are_told_apart_by_the_guidance_embedder(flux):
    _, root, split = flux
    with StreamedTensors(split[""]) as tensors:
        keys, metadata = list(tensors), tensors.metadata
    assert detect_original_family(split[""], keys, metadata) is FLUX1_DEV
    schnell_keys = [key for key in keys if not key.startswith("guidance_in.")]
    assert detect_original_family(split[""], schnell_keys, {}) is FLUX1_SCHNELL
    comfy_keys = ["model.diffusion_model." + key for key in schnell_keys]
    assert detect_original_family(root / "comfy.safetensors", comfy_keys, {}) is FLUX1_SCHNELL


def test_a_missing_split_file_is_named(flux):
    _, _, split = flux
    options = _split_options(split)
    del options["ae"]
    with pytest.raises(ModelLoadError, match=r"set model\.ae to the separate ae file") as error:
        load_base_model(split[""], split_files=options)
    assert "\n" not in str(error.value)


def test_sizes_are_read_without_loading(flux):
    components, root, split = flux
    expected = {
        "transformer": sum(p.numel() for p in components.unet.parameters()),
        "vae": sum(p.numel() for p in components.vae.parameters()),
        "text_encoder": sum(p.numel() for p in components.text_encoders[0].parameters()),
    }
    for sizes in (read_model_sizes(root / "diffusers"), read_model_sizes(split[""], split_files=_split_options(split))):
        assert sizes.family is FLUX1_DEV
        assert {name: sizes.parameters[name] for name in expected} == expected
        assert sizes.denoiser_parameters == expected["transformer"]
        assert sizes.unet_config["num_single_layers"] == 2 and sizes.vae_config["latent_channels"] == 16


def test_bfl_rules_read_as_diffusers_own_converter_does_at_flux_width():
    """diffusers' BFL reader hard-codes FLUX.1's 3072-wide blocks, so it is compared at that width (one double and
    one single block). Both readers only move rows, so each tensor is one column whose values say which key and
    row they came from."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from library.models.single_file import reference_configs
    from library.models.single_file.bfl_layout import bfl_transformer_rules
    from library.models.single_file.components import component_layouts, expected_shapes
    from library.models.single_file.rules import to_diffusers, to_original

    full_size = reference_configs(FLUX1_DEV.name)["transformer"]
    config = {key: value for key, value in full_size.items() if not key.startswith("_")}
    config.update(num_layers=1, num_single_layers=1)
    layout = next(layout for layout in component_layouts(FLUX1_DEV.name) if layout.name == "transformer")
    shapes = expected_shapes(layout, config)
    rules = bfl_transformer_rules(config, list(shapes))
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    bfl_shapes = {key: tensor.shape for key, tensor in to_original(rules, meta, shapes, "", "transformer").items()}

    def tagged(index: int, shape: torch.Size) -> torch.Tensor:
        return (torch.arange(shape[0], dtype=torch.int64) + index * 100_000).reshape(-1, 1)

    checkpoint = {key: tagged(index, shape) for index, (key, shape) in enumerate(sorted(bfl_shapes.items()))}
    row_shapes = {key: torch.Size([shape[0], 1]) for key, shape in shapes.items()}
    ours = to_diffusers(rules, dict(checkpoint), row_shapes, "", "transformer")
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(checkpoint))
    assert ours.keys() == theirs.keys() == shapes.keys()
    assert all(torch.equal(ours[key], tensor) for key, tensor in theirs.items())
    assert bfl_shapes["single_blocks.0.linear1.weight"] == (3 * 3072 + 4 * 3072, 3072)


def test_sd_scripts_split_file_names_reach_the_loader_options(flux, tmp_path):
    from library.config import loads_config

    _, _, split = flux
    toml = (
        f'pretrained_model_name_or_path = "{split[""]}"\nae = "{split["ae"]}"\n'
        f'clip_l = "{split["clip_l"]}"\ntrain_data_dir = "{tmp_path}"\n'
    )
    config = loads_config(toml, overrides=["--t5xxl", str(split["t5xxl"])])
    assert config.model.split_files() == {option: str(path) for option, path in _split_options(split).items()}
    assert read_model_sizes(config.model.pretrained_model_name_or_path, split_files=config.model.split_files()).family \
        is FLUX1_DEV


def test_flux_lora_and_full_fine_tuning_are_accepted_and_pivotal_tuning_refused_in_one_line(flux, tmp_path):
    from library.config import loads_config
    from library.training.exceptions import TrainingSetupError
    from library.training.family_support import check_trainable_family
    from library.training.full_weights import FullWeights
    from library.training.lora_weights import LoraWeights
    from library.training.pivotal_weights import PivotalWeights

    _, root, _ = flux
    config = loads_config(
        f'[model]\npretrained_model_name_or_path = "{root / "diffusers"}"\n[dataset]\ntrain_data_dir = "{tmp_path}"\n'
    )
    check_trainable_family(config, LoraWeights)
    check_trainable_family(config, FullWeights)
    with pytest.raises(TrainingSetupError, match=r"^model\.pretrained_model_name_or_path: a FLUX\.1 \[dev\] model; "
                                                 r"pivotal tuning of its transformer is not supported yet .* trains a "
                                                 r"LoRA with train_network\.py, or DreamBooth with train_dreambooth\.py"):
        check_trainable_family(config, PivotalWeights)


def test_a_block_selection_is_refused_for_a_family_without_selectable_blocks(tiny_sd1, tmp_path):
    from library.config import loads_config
    from library.training.exceptions import TrainingSetupError
    from library.training.family_support import check_trainable_family
    from library.training.lora_weights import LoraWeights

    config = loads_config(f'pretrained_model_name_or_path = "{tiny_sd1.folder}"\ntrain_data_dir = "{tmp_path}"\n',
                          overrides=["--network_args", "train_blocks=single"])
    with pytest.raises(TrainingSetupError, match=r"^network\.train_blocks / train_\*_block_indices: they select "
                                                 r"FLUX\.1 transformer blocks; a Stable Diffusion 1\.x model"):
        check_trainable_family(config, LoraWeights)
