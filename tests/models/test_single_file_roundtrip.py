"""Tiny models of every family survive diffusers -> original layout -> diffusers, on disk, bit for bit."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from library.models.families import get_family
from library.models.single_file import diffusers_to_original, original_to_diffusers, save_original_checkpoint
from library.models.single_file.components import component_layouts, instantiate
from library.models.tiny import build_components, component_state_dicts, tiny_configs

FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")


def _tiny(family: str, seed: int = 0) -> tuple[dict, dict]:
    """(configs, state dicts) of the tiny model of ``family``."""
    model_family = get_family(family)
    configs = tiny_configs(model_family)
    return configs, component_state_dicts(model_family, build_components(model_family, configs, seed))


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return (request.param, *_tiny(request.param, seed=7))


def _assert_same_tensors(expected: dict, actual: dict) -> None:
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), key


def test_file_round_trip_loads_strictly(tiny, tmp_path):
    family, configs, state_dicts = tiny
    path = tmp_path / "model.safetensors"
    save_original_checkpoint(path, family, state_dicts, configs)
    assert not (tmp_path / "model.safetensors.tmp").exists()

    inferred, loaded = original_to_diffusers(family, load_file(str(path)))
    for name, state_dict in state_dicts.items():
        _assert_same_tensors(state_dict, loaded[name])
        model_class = next(layout.model_class for layout in component_layouts(family) if layout.name == name)
        module = instantiate(model_class, inferred[name])
        module.load_state_dict(loaded[name], strict=True)
        _assert_same_tensors(state_dict, module.state_dict())


def test_metadata_defaults_and_overrides(tiny, tmp_path):
    family, configs, state_dicts = tiny
    path = tmp_path / "model.safetensors"
    save_original_checkpoint(path, family, state_dicts, configs, metadata={"modelspec.title": "mine", "note": "x"})
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    model_family = get_family(family)
    assert metadata["modelspec.sai_model_spec"] == "1.0.1"
    assert metadata["modelspec.architecture"] == model_family.modelspec_architecture
    assert metadata["modelspec.prediction_type"] == ("v" if model_family.is_v_prediction else "epsilon")
    assert metadata["modelspec.title"] == "mine"
    assert metadata["note"] == "x"


def test_half_precision_file(tiny, tmp_path):
    family, configs, state_dicts = tiny
    path = tmp_path / "model.safetensors"
    save_original_checkpoint(path, family, state_dicts, configs, dtype=torch.float16)
    tensors = load_file(str(path))
    assert {tensor.dtype for tensor in tensors.values()} == {torch.float16}
    _, loaded = original_to_diffusers(family, tensors)
    for name, state_dict in state_dicts.items():
        _assert_same_tensors({k: v.half() for k, v in state_dict.items()}, loaded[name])


def test_conventional_key_layout(tiny):
    family, configs, state_dicts = tiny
    original = diffusers_to_original(family, state_dicts, configs)
    prefixes = {layout.name: layout.prefix for layout in component_layouts(family)}
    assert all(key.startswith(tuple(prefixes.values())) for key in original)

    vae_attention = [key for key in original if ".mid.attn_1." in key and key.endswith(".weight")]
    assert len(vae_attention) == 2 * 5  # encoder and decoder: norm, q, k, v, proj_out
    for key in vae_attention:
        expected_ndim = 1 if ".norm." in key else 4
        assert original[key].ndim == expected_ndim, key

    for name, state_dict in state_dicts.items():
        prefix = prefixes[name]
        written = [key for key in original if key.startswith(prefix)]
        if ".model." not in prefix:  # UNet, VAE and CLIP-L: one original tensor per module tensor
            assert len(written) == len(state_dict)
            continue
        layers = configs[name]["num_hidden_layers"]
        qkv_tensors = 6 * layers  # q/k/v weight and bias per layer, packed into in_proj weight and bias
        if "text_projection.weight" in state_dict:
            assert len(written) == len(state_dict) - qkv_tensors + 2 * layers
            projection = state_dict["text_projection.weight"]
            assert torch.equal(original[prefix + "text_projection"], projection.T)
        else:  # SD2: the tower's unused last block and projection complete the layout
            per_block = sum(key.startswith(f"{prefix}transformer.resblocks.0.") for key in written)
            assert per_block == 12
            assert len(written) == len(state_dict) - qkv_tensors + 2 * layers + per_block + 1
            last, extra = f"{prefix}transformer.resblocks.{layers - 1}.", f"{prefix}transformer.resblocks.{layers}."
            for key in written:
                if key.startswith(extra):
                    assert torch.equal(original[key], original[key.replace(extra, last)])
            width = configs[name]["hidden_size"]
            assert torch.equal(original[prefix + "text_projection"], torch.eye(width))


def test_non_weight_keys_are_ignored(tiny):
    family, configs, state_dicts = tiny
    original = diffusers_to_original(family, state_dicts, configs)
    text_prefix = component_layouts(family)[2].prefix
    noisy = {
        **original,
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.diffusion_modelout2weight": torch.zeros(3),
        "alphas_cumprod": torch.ones(1000),
        f"{text_prefix}text_model.embeddings.position_ids": torch.arange(77)[None],
        f"{text_prefix}logit_scale": torch.tensor(4.6),
        "optimizer.state.0": torch.zeros(2),
    }
    _, clean = original_to_diffusers(family, original)
    _, loaded = original_to_diffusers(family, noisy)
    for name in state_dicts:
        _assert_same_tensors(clean[name], loaded[name])


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_clip_keys_without_text_model_wrapper(family):
    """Files saved by early transformers versions store CLIP-L without the ``text_model.`` level."""
    configs, state_dicts = _tiny(family)
    original = diffusers_to_original(family, state_dicts, configs)
    prefix = component_layouts(family)[2].prefix
    legacy = {key.replace(f"{prefix}text_model.", prefix): tensor for key, tensor in original.items()}
    assert legacy.keys() != original.keys()
    _, loaded = original_to_diffusers(family, legacy)
    for name, state_dict in state_dicts.items():
        _assert_same_tensors(state_dict, loaded[name])


@pytest.mark.parametrize(
    "missing",
    [
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.conv_in.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
    ],
)
def test_missing_expected_key_is_named(missing):
    configs, state_dicts = _tiny("sd1")
    original = diffusers_to_original("sd1", state_dicts, configs)
    del original[missing]
    with pytest.raises(ValueError, match=f"lacks the expected key '{missing}'"):
        original_to_diffusers("sd1", original)


def test_missing_text_encoder_block_is_named(tiny):
    family, configs, state_dicts = tiny
    original = diffusers_to_original(family, state_dicts, configs)
    victim = next(key for key in original if ".layers.1." in key or ".resblocks.1." in key)
    del original[victim]
    with pytest.raises(ValueError, match="lacks the expected key"):
        original_to_diffusers(family, original)


def test_writer_rejects_foreign_tensors():
    configs, state_dicts = _tiny("sd1")
    unet = dict(state_dicts["unet"])
    unet["down_blocks.0.attentions.0.proj_in.lora_A.weight"] = torch.zeros(4, 32)
    with pytest.raises(ValueError, match="lora_A"):
        diffusers_to_original("sd1", {**state_dicts, "unet": unet}, configs)
    with pytest.raises(ValueError, match="text_encoder_2"):
        diffusers_to_original("sd1", {**state_dicts, "text_encoder_2": {}}, configs)
    with pytest.raises(ValueError, match="unknown model family"):
        diffusers_to_original("sd3", state_dicts, configs)


@pytest.mark.parametrize(
    ("key", "shape", "message"),
    [
        ("first_stage_model.encoder.mid.attn_1.k.weight", (32, 32, 3, 3), "1x1 convolution"),
        ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", (32, 16), "does not fit"),
    ],
)
def test_misshapen_tensor_is_named(key, shape, message):
    configs, state_dicts = _tiny("sd1")
    original = diffusers_to_original("sd1", state_dicts, configs)
    original[key] = torch.zeros(shape)
    with pytest.raises(ValueError, match=f"'{key}'.*{message}"):
        original_to_diffusers("sd1", original)
