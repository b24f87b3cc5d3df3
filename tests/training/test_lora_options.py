"""The loop options a user combines: each combination trains, changes the adapters and writes a loadable file."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from trainer_cli import base_args, read_events, run_cli

pytestmark = pytest.mark.slow  # these tests start processes or trainers

OPTION_SETS = {
    "checkpointing-bf16-accumulation": {
        "training.gradient_checkpointing": "true",
        "training.mixed_precision": "bf16",
        "training.gradient_accumulation_steps": 2,
    },
    "adamw8bit-cosine-minsnr-huber": {
        "optimizer.type": "AdamW8bit",
        "optimizer.lr_scheduler": "cosine_with_restarts",
        "optimizer.lr_warmup_steps": 2,
        "training.min_snr_gamma": 5,
        "training.loss_type": "huber",
        "training.multires_noise_iterations": 4,
    },
    "locon-dora-lion": {
        "network.conv_dim": 2,
        "network.conv_alpha": 1,
        "network.use_dora": "true",
        "optimizer.type": "Lion",
        "optimizer.learning_rate": 1e-4,
    },
    "prodigy-epochs-unet-only-cached": {
        "optimizer.type": "Prodigy",
        "optimizer.learning_rate": 1.0,
        "training.max_train_epochs": 1,
        "network.train_unet_only": "true",
        "dataset.cache_latents_to_disk": "true",
        "dataset.cache_text_encoder_outputs": "true",
        "model.clip_skip": 2,
    },
    "adafactor-te-only-flip": {
        "optimizer.type": "Adafactor",
        "network.train_text_encoder_only": "true",
        "dataset.flip_aug": "true",
        "dataset.enable_bucket": "true",
        "dataset.min_bucket_reso": 64,
        "dataset.max_bucket_reso": 128,
        "dataset.resolution": 96,
        "dataset.bucket_reso_steps": 32,
    },
}


@pytest.mark.parametrize("name", OPTION_SETS)
def test_option_combination_trains(name, tiny_model_factory, concept_dataset, tmp_path_factory):
    output = tmp_path_factory.mktemp(name)
    model = tiny_model_factory("sd1").folder
    overrides = [item for key, value in OPTION_SETS[name].items() for item in (f"--{key}", str(value))]
    run_cli("train_network.py", [*base_args(model, concept_dataset, output, max_train_steps=4), *overrides])
    events = read_events(output)
    losses = [event["loss"] for event in events if event["event"] == "step"]
    assert losses and all(math.isfinite(loss) for loss in losses)
    tensors = load_file(output / "lora.safetensors")
    ups = [tensor for key, tensor in tensors.items() if key.endswith("lora_up.weight")]
    assert any(bool(up.abs().sum() > 0) for up in ups), "the adapters were trained (up matrices left zero)"
    with safe_open(str(output / "lora.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_optimizer"] == OPTION_SETS[name].get("optimizer.type", "AdamW")
    if "network.conv_dim" in OPTION_SETS[name]:
        assert any("resnets" in key for key in tensors) and any(key.endswith("dora_scale") for key in tensors)
    if "network.train_unet_only" in OPTION_SETS[name]:
        assert not any(key.startswith("lora_te") for key in tensors)
    if "network.train_text_encoder_only" in OPTION_SETS[name]:
        assert not any(key.startswith("lora_unet") for key in tensors)
    if OPTION_SETS[name].get("dataset.cache_latents_to_disk"):
        assert list(concept_dataset.rglob(".furnace_cache/*.safetensors"))


def test_second_run_reuses_the_disk_latent_cache(tiny_model_factory, concept_dataset, tmp_path):
    model = tiny_model_factory("sd1").folder
    args = base_args(model, concept_dataset, tmp_path / "a", max_train_steps=1)
    run_cli("train_network.py", [*args, "--dataset.cache_latents_to_disk", "true"])
    cache_files = {path: path.stat().st_mtime_ns for path in concept_dataset.rglob(".furnace_cache/*.safetensors")}
    assert cache_files
    second = run_cli(
        "train_network.py",
        [*base_args(model, concept_dataset, tmp_path / "b", max_train_steps=1), "--dataset.cache_latents_to_disk", "true"],
    )
    assert "reused from the disk cache, 0 encoded" in second.stderr
    assert {path: path.stat().st_mtime_ns for path in cache_files} == cache_files


def test_trained_file_loads_in_diffusers_like_our_merge(tiny_model_factory, concept_dataset, tmp_path):
    """The consumer's view: diffusers load_lora_weights + fuse gives our merged weights and the same picture."""
    from diffusers import StableDiffusionPipeline

    from library.models.families import get_family
    from library.networks import merge_lora_into, read_lora_file

    folder = tiny_model_factory("sd1").folder
    run_cli("train_network.py", base_args(folder, concept_dataset, tmp_path, max_train_steps=6, learning_rate=1e-2))
    lora, _ = read_lora_file(tmp_path / "lora.safetensors")

    def render(pipeline):
        generator = torch.Generator().manual_seed(0)
        return pipeline("frnc, red circle", num_inference_steps=3, height=64, width=64, generator=generator,
                        output_type="np").images[0]

    base = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    base.set_progress_bar_config(disable=True)
    before = render(base)
    ours = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    ours.set_progress_bar_config(disable=True)
    merge_lora_into(get_family("sd1"), ours.unet, [ours.text_encoder], lora)
    theirs = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    theirs.set_progress_bar_config(disable=True)
    theirs.load_lora_weights(str(tmp_path / "lora.safetensors"))
    theirs.fuse_lora()
    theirs.unload_lora_weights()
    for name in ("unet", "text_encoder"):
        mine, other = getattr(ours, name).state_dict(), getattr(theirs, name).state_dict()
        for key, tensor in mine.items():
            assert torch.allclose(tensor, other[key], atol=1e-6), f"{name}.{key}"
    ours_image, theirs_image = render(ours), render(theirs)
    assert abs(ours_image - theirs_image).max() < 1e-4
    assert abs(ours_image - before).max() > 1e-3
