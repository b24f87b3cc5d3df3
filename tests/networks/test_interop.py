"""Other programs read our files as we mean them: diffusers' kohya loader (SD1, SD2-v, SDXL) and LyCORIS (DoRA).

diffusers ``load_lora_weights`` + ``fuse_lora`` must give exactly the weights of our ``merge_lora_into``, and the
pipeline output must follow. diffusers drops ``dora_scale`` from kohya files, so DoRA files are checked against
LyCORIS, whose loader reads the kohya DoRA layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from library.models.tiny import build_pipeline
from library.networks import LoraOptions, inject_lora, merge_lora_into, read_lora_file
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
    return path


def _assert_state_dicts_equal(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    expected_sd, actual_sd = expected.state_dict(), actual.state_dict()
    assert set(expected_sd) == set(actual_sd)
    for key, tensor in expected_sd.items():
        assert torch.equal(actual_sd[key], tensor), key


@pytest.mark.parametrize(
    ("family_name", "options"),
    [
        ("sd1", LoraOptions(dim=4, alpha=2.0)),
        ("sd1", LoraOptions(dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)),
        ("sd2-v", LoraOptions(dim=4, alpha=8.0)),
        ("sdxl", LoraOptions(dim=4, alpha=2.0, conv_dim=2)),
    ],
    ids=["sd1", "sd1-locon", "sd2-v", "sdxl-locon"],
)
def test_diffusers_load_lora_weights_matches_our_merge(tiny, perturb, tmp_path, family_name, options):
    path = _write_random_lora(tiny, perturb, tmp_path, family_name, options)
    family, base = tiny(family_name)
    base_image = _render(build_pipeline(family, base))

    _, theirs = tiny(family_name)
    pipeline = build_pipeline(family, theirs)
    pipeline.load_lora_weights(str(path))
    pipeline.fuse_lora()
    pipeline.unload_lora_weights()
    their_image = _render(pipeline)

    _, ours = tiny(family_name)
    tensors, _ = read_lora_file(path)
    merged = merge_lora_into(family, ours.unet, ours.text_encoders, tensors)
    assert merged == sum(key.endswith(".lora_down.weight") for key in tensors)
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
