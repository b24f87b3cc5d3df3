"""The LoRA trainer's flags unchanged on an SDXL base: te1/te2 + SGM names, exact resume, diffusers interop."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from trainer_cli import base_args, run_cli

pytestmark = pytest.mark.slow  # these tests start processes or trainers


def test_sdxl_lora_resumes_exactly_and_matches_diffusers(tiny_model_factory, concept_dataset, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from library.models.families import get_family
    from library.networks import merge_lora_into, read_lora_file

    tiny = tiny_model_factory("sdxl")
    reference = tmp_path / "reference"
    run_cli("train_network.py", base_args(tiny.single_file, concept_dataset, reference, max_train_steps=4))
    staged = tmp_path / "staged"
    first = base_args(tiny.single_file, concept_dataset, staged, max_train_steps=2)
    run_cli("train_network.py", [*first, "--save_state_on_train_end", "true"])
    run_cli("train_network.py", [*base_args(tiny.single_file, concept_dataset, staged, max_train_steps=4),
                                 "--resume", "latest"])
    a, b = load_file(reference / "lora.safetensors"), load_file(staged / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)

    with safe_open(str(reference / "lora.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    modules = {key.split(".")[0] for key in a}
    assert any(name.startswith("lora_te1_text_model_encoder_layers_") for name in modules)
    assert any(name.startswith("lora_te2_text_model_encoder_layers_") for name in modules)
    assert any(name.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1") for name in modules)
    assert not any("down_blocks" in name for name in modules)

    lora, _ = read_lora_file(reference / "lora.safetensors")
    ours = StableDiffusionXLPipeline.from_pretrained(tiny.folder, local_files_only=True)
    merge_lora_into(get_family("sdxl"), ours.unet, [ours.text_encoder, ours.text_encoder_2], lora)
    theirs = StableDiffusionXLPipeline.from_pretrained(tiny.folder, local_files_only=True)
    theirs.load_lora_weights(str(reference / "lora.safetensors"))
    theirs.fuse_lora()
    theirs.unload_lora_weights()
    for name in ("unet", "text_encoder", "text_encoder_2"):
        mine, other = getattr(ours, name).state_dict(), getattr(theirs, name).state_dict()
        assert all(torch.allclose(tensor, other[key], atol=1e-6) for key, tensor in mine.items()), name


def test_network_weights_continue_from_a_file(tiny_model_factory, concept_dataset, tmp_path):
    model = tiny_model_factory("sd1").folder
    run_cli("train_network.py", base_args(model, concept_dataset, tmp_path / "a", max_train_steps=3,
                                          learning_rate=1e-2))
    start = tmp_path / "a" / "lora.safetensors"
    run_cli("train_network.py", [*base_args(model, concept_dataset, tmp_path / "b", max_train_steps=1,
                                            learning_rate=1e-9, max_grad_norm=0), "--network_weights", str(start)])
    before, after = load_file(start), load_file(tmp_path / "b" / "lora.safetensors")
    assert before.keys() == after.keys()
    ups = [key for key in before if key.endswith("lora_up.weight")]
    assert any(before[key].abs().max() > 1e-4 for key in ups)  # the start file is trained, not zeros
    assert all(torch.allclose(before[key], after[key], atol=1e-6) for key in before)
