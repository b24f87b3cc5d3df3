"""Other programs read our files as we mean them: diffusers' loaders (SD1, SD2-v and SDXL, both layouts) and LyCORIS
(DoRA); and we read diffusers' own files as it means them.

diffusers ``load_lora_weights`` + ``fuse_lora`` must give exactly the weights of our ``merge_lora_into``, and the
pipeline output must follow. diffusers drops ``dora_scale`` from kohya files, so DoRA files are checked against
LyCORIS, whose loader reads the kohya DoRA layout.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from library.models.tiny import build_pipeline
from library.networks import LoraFileError, LoraOptions, inject_lora, merge_lora_into, read_lora_file
from library.networks.lora_file import read_tensors_file, split_modules
from library.networks.lora_layouts import adapter_tensors
from library.networks.naming import LoraNamer, text_encoder_name
from library.networks.targets import index_modules


def _render(pipeline) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipeline(
        "a photo of a sks dog", num_inference_steps=2, height=64, width=64, generator=generator, output_type="np"
    ).images


def _write_random_lora(tiny, perturb, tmp_path, family_name: str, options: LoraOptions):
    family, components = tiny(family_name)
    network = inject_lora(family, components.unet, components.text_encoders, options)
    perturb(network)
    path = tmp_path / f"{family_name}.safetensors"
    network.save(path, "float", {"ss_output_name": family_name})
    tensors, metadata = read_tensors_file(path)
    written = network.state_dict_kohya()  # the file reads back as the network: every module's rank and alpha
    read = adapter_tensors(family, tensors, str(path), metadata)
    assert set(read) == set(written)
    for key, tensor in written.items():
        assert torch.equal(read[key], tensor), key
    return path


def _assert_state_dicts_equal(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    expected_sd, actual_sd = expected.state_dict(), actual.state_dict()
    assert set(expected_sd) == set(actual_sd)
    for key, tensor in expected_sd.items():
        assert torch.equal(actual_sd[key], tensor), key


def _loaded_lora_weights(pipeline, family) -> dict[str, torch.Tensor]:
    """Every LoRA tensor diffusers injected, under the diffusers layout's keys (CLIP's ``text_model.`` restored)."""
    loaded = {}
    for component in (family.denoiser, *(spec.component for spec in family.text_encoders)):
        wrapper = "" if component == family.denoiser else "text_model."
        for path, module in getattr(pipeline, component).named_modules():
            if hasattr(module, "lora_A") and module.lora_A:
                (adapter,) = module.lora_A
                key = f"{component}.{wrapper}{path.removeprefix(wrapper)}"
                loaded[key + ".lora_A.weight"] = module.lora_A[adapter].weight
                loaded[key + ".lora_B.weight"] = module.lora_B[adapter].weight
    return loaded


@pytest.mark.parametrize(
    ("family_name", "options"),
    [
        ("sd1", LoraOptions(dim=4, alpha=2.0)),
        ("sd1", LoraOptions(dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)),
        ("sd2-v", LoraOptions(dim=4, alpha=8.0)),
        ("sdxl", LoraOptions(dim=4, alpha=2.0, conv_dim=2)),
        ("sd1", LoraOptions(dim=4, alpha=2.0, save_format="diffusers")),
        # conv modules at another rank and alpha: rank_pattern and alpha_pattern
        ("sd1", LoraOptions(dim=4, alpha=2.0, conv_dim=2, conv_alpha=3.0, save_format="diffusers")),
        ("sd2-v", LoraOptions(dim=4, alpha=8.0, save_format="diffusers")),
        ("sdxl", LoraOptions(dim=4, alpha=2.0, conv_dim=2, conv_alpha=3.0, save_format="diffusers")),
    ],
    ids=[
        "sd1", "sd1-locon", "sd2-v", "sdxl-locon",
        "sd1-diffusers", "sd1-locon-diffusers", "sd2-v-diffusers", "sdxl-locon-diffusers",
    ],
)
def test_diffusers_load_lora_weights_matches_our_merge(tiny, perturb, tmp_path, family_name, options):
    path = _write_random_lora(tiny, perturb, tmp_path, family_name, options)
    family, base = tiny(family_name)
    base_image = _render(build_pipeline(family, base))

    tensors, metadata = read_tensors_file(path)
    _, theirs = tiny(family_name)
    pipeline = build_pipeline(family, theirs)
    pipeline.load_lora_weights(str(path))
    if options.save_format == "diffusers":  # every tensor of the file, and nothing else, went into the pipeline
        loaded = _loaded_lora_weights(pipeline, family)
        assert set(loaded) == set(tensors)
        assert all(torch.equal(loaded[key], tensor) for key, tensor in tensors.items())
    pipeline.fuse_lora()
    pipeline.unload_lora_weights()
    their_image = _render(pipeline)

    _, ours = tiny(family_name)
    merged = merge_lora_into(family, ours.unet, ours.text_encoders, tensors, metadata=metadata)
    assert merged == sum(key.endswith((".lora_down.weight", ".lora_A.weight")) for key in tensors)
    _assert_state_dicts_equal(theirs.unet, ours.unet)
    for spec, encoder in zip(family.text_encoders, ours.text_encoders):
        _assert_state_dicts_equal(getattr(pipeline, spec.component), encoder)
    our_image = _render(build_pipeline(family, ours))

    np.testing.assert_allclose(our_image, their_image, atol=1e-5)
    assert np.abs(our_image - base_image).max() > 1e-3
    for before, after in ((base.unet, ours.unet), *zip(base.text_encoders, ours.text_encoders)):
        changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
        assert changed, "every component must be changed by the LoRA"


@pytest.mark.parametrize("conv_dim", [None, 2])
def test_lycoris_reads_our_dora_files(tiny, perturb, tmp_path, conv_dim):
    lycoris_modules = pytest.importorskip("lycoris.modules")
    options = LoraOptions(dim=4, alpha=2.0, conv_dim=conv_dim, use_dora=True)
    path = _write_random_lora(tiny, perturb, tmp_path, "sd1", options)
    tensors, _ = read_lora_file(path)
    assert tensors["lora_unet_mid_block_attentions_0_proj_out.dora_scale"].ndim == 4  # [out, 1, 1, 1]
    assert tensors["lora_te_text_model_encoder_layers_0_mlp_fc1.dora_scale"].shape[1:] == (1,)  # [out, 1]

    family, base = tiny("sd1")
    index = index_modules(family, base.unet, base.text_encoders)
    _, ours = tiny("sd1")
    merge_lora_into(family, ours.unet, ours.text_encoders, tensors)
    ours_index = index_modules(family, ours.unet, ours.text_encoders)
    names = {key.split(".")[0] for key in tensors}
    for name in names:
        algorithm, params = lycoris_modules.get_module(tensors, name)
        module = lycoris_modules.make_module(algorithm, params, name, index[name][0])
        expected, _ = module.get_merged_weight()
        torch.testing.assert_close(ours_index[name][0].weight, expected.to(torch.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keys", ["peft", "diffusers-older"])
@torch.no_grad()
def test_we_read_diffusers_save_lora_weights_with_its_alphas(tiny, tmp_path, keys):
    """A file diffusers writes itself (each component's LoraConfig as metadata, ranks and alphas varying by pattern,
    rsLoRA in the text encoder; peft's keys, or the older ones SD training scripts save through
    ``convert_state_dict_to_diffusers``) reads with every module's rank, scale and tensors as peft applies them."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer
    from peft.utils import get_peft_model_state_dict

    family, components = tiny("sd1")
    unet, (encoder,) = components.unet, components.text_encoders
    unet.add_adapter(LoraConfig(
        r=4, lora_alpha=2.0, target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1"],
        rank_pattern={"^down_blocks.0.resnets.0.conv1": 2, "to_v": 3}, alpha_pattern={"conv1": 3.0, "to_k": 8.0},
    ))
    encoder.add_adapter(LoraConfig(
        r=4, lora_alpha=4.0, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], use_rslora=True,
        rank_pattern={"k_proj": 2}, alpha_pattern={"layers.1.self_attn.q_proj": 1.0},
    ))
    generator = torch.Generator().manual_seed(0)
    for model in (unet, encoder):
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    convert = convert_state_dict_to_diffusers if keys == "diffusers-older" else dict
    StableDiffusionPipeline.save_lora_weights(
        tmp_path,
        unet_lora_layers=convert(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert(get_peft_model_state_dict(encoder)),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=encoder.peft_config["default"].to_dict(),
    )
    path = tmp_path / "pytorch_lora_weights.safetensors"
    tensors, metadata = read_tensors_file(path)
    if keys == "diffusers-older":
        assert any(key.endswith(".lora.down.weight") for key in tensors)
        assert any(key.endswith(".lora_linear_layer.down.weight") for key in tensors)
    modules = split_modules(adapter_tensors(family, tensors, str(path), metadata), str(path))

    namer = LoraNamer(family, unet.config)
    expected = {
        name_of(path): layer
        for model, name_of in ((unet, namer.unet), (encoder, partial(text_encoder_name, family.text_encoders[0])))
        for path, layer in model.named_modules()
        if isinstance(layer, LoraLayer)
    }
    assert set(modules) == set(expected)
    scales = set()
    for name, layer in expected.items():
        weights = modules[name]
        assert weights.rank == layer.r["default"], name
        assert weights.scale == pytest.approx(layer.scaling["default"], rel=1e-6), name
        assert torch.equal(weights.down, layer.lora_A["default"].weight), name
        assert torch.equal(weights.up, layer.lora_B["default"].weight), name
        scales.add(round(weights.scale, 6))
    assert len(scales) >= 5  # the patterns and rsLoRA did give modules different scales


def test_diffusers_layout_files_with_alpha_tensors_read_as_before(tiny, perturb, tmp_path):
    """Files written before the alphas moved to the metadata hold them as ``<component>.<path>.alpha`` tensors."""
    options = LoraOptions(dim=4, alpha=2.0, conv_dim=2, conv_alpha=3.0, save_format="diffusers")
    path = _write_random_lora(tiny, perturb, tmp_path, "sd1", options)
    tensors, metadata = read_tensors_file(path)
    family, _ = tiny("sd1")
    current = adapter_tensors(family, tensors, str(path), metadata)
    alphas = {  # 3x3 convs at conv_alpha, the rest at alpha
        key.replace(".lora_A.weight", ".alpha"): torch.tensor(3.0 if tensor.ndim == 4 and tensor.shape[2] == 3 else 2.0)
        for key, tensor in tensors.items()
        if key.endswith(".lora_A.weight")
    }
    older = {**tensors, **alphas}
    read = adapter_tensors(family, older, "older")
    assert set(read) == set(current)
    for key, tensor in current.items():
        assert torch.equal(read[key], tensor), key


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"unet.r": 4, "unet.lora_alpha": 2, "unet.bogus": 1}', "of 'unet' is not a peft LoraConfig"),
    ],
)
def test_a_damaged_adapter_metadata_entry_is_refused_naming_the_file(tiny, perturb, tmp_path, entry, message):
    path = _write_random_lora(tiny, perturb, tmp_path, "sd1", LoraOptions(dim=4, alpha=2.0, save_format="diffusers"))
    tensors, metadata = read_tensors_file(path)
    family, _ = tiny("sd1")
    with pytest.raises(LoraFileError, match=f"^{path}: metadata 'lora_adapter_metadata' .*{message}"):
        adapter_tensors(family, tensors, str(path), {**metadata, "lora_adapter_metadata": entry})
