"""The memory estimate's terms follow the settings they depend on, the machine's figure is read as documented, and
the refusal names the largest term's settings."""

from __future__ import annotations

import pytest
import torch

from library.config import loads_config
from library.models.sizes import read_model_sizes
from library.training.available_memory import MEMORY_ENV, Available, available_memory
from library.training.memory_estimate import (
    LargestBatch,
    estimate_memory,
    largest_batch,
    lora_adapter_parameters,
    refusal,
)

FP32 = (torch.float32, torch.float32)
BF16 = (torch.bfloat16, torch.float32)


@pytest.fixture(scope="module")
def sizes(tiny_model_factory):
    return read_model_sizes(tiny_model_factory("sd1").single_file)


def _config(*overrides: str):
    text = "[model]\npretrained_model_name_or_path = 'base.safetensors'\n[dataset]\ntrain_data_dir = 'images'\n"
    return loads_config(text, overrides=list(overrides))


def _estimate(sizes, *overrides: str, full: bool = False, dtypes=FP32, partitioned: bool = False):
    config = _config(*overrides)
    return estimate_memory(config, sizes, largest_batch(config), full, dtypes, partitioned)


def test_activations_grow_with_batch_and_latent_pixels(sizes):
    base = _estimate(sizes, "--resolution", "512", "--train_batch_size", "1").activations
    assert _estimate(sizes, "--resolution", "512", "--train_batch_size", "4").activations == pytest.approx(4 * base)
    assert _estimate(sizes, "--resolution", "1024", "--train_batch_size", "1").activations == pytest.approx(4 * base)
    wide = _estimate(sizes, "--resolution", "1024,512", "--train_batch_size", "1").activations
    assert wide == pytest.approx(2 * base)


def test_checkpointing_and_half_precision_lower_the_activations(sizes):
    plain = _estimate(sizes, "--resolution", "1024").activations
    assert _estimate(sizes, "--resolution", "1024", "--gradient_checkpointing").activations < plain / 2
    assert _estimate(sizes, "--resolution", "1024", "--mixed_precision", "bf16").activations == pytest.approx(plain / 2)


def test_frozen_weights_in_bf16_halve_all_but_the_vae(sizes):
    fp32, bf16 = _estimate(sizes).weights, _estimate(sizes, dtypes=BF16).weights
    vae = sizes.parameters["vae"] * 4
    assert bf16 - vae == (fp32 - vae) // 2
    assert fp32 == sum(sizes.parameters.values()) * 4


def test_fp8_base_counts_its_stored_weights_at_one_byte(sizes):
    bf16 = _estimate(sizes, "--mixed_precision", "bf16", dtypes=BF16).weights
    fp8 = _estimate(sizes, "--mixed_precision", "bf16", "--fp8_base", "true", dtypes=BF16).weights
    matrices = sum(torch.Size(shape).numel() for shape in sizes.unet_shapes.values() if len(shape) >= 2)
    in_fp8 = matrices + sizes.text_encoder_parameters
    assert bf16 - fp8 == in_fp8  # two bytes a parameter become one
    assert in_fp8 > 0.9 * (sizes.parameters["unet"] + sizes.text_encoder_parameters)
    full = _estimate(sizes, "--mixed_precision", "bf16", "--fp8_base", "true", dtypes=BF16, full=True).weights
    assert full == bf16  # a full fine-tune stores nothing in fp8 (and is refused before the estimate)


def test_training_state_follows_what_trains_and_the_optimizer(sizes):
    unet = sizes.parameters["unet"]
    assert _estimate(sizes, full=True).training_state == unet * (4 + 8)  # gradients + AdamW's two moments
    assert _estimate(sizes, "--optimizer_type", "AdamW8bit", full=True).training_state == unet * (4 + 2)
    text_encoder = _estimate(sizes, "--train_text_encoder", full=True).training_state
    assert text_encoder == (unet + sizes.text_encoder_parameters) * 12
    assert _estimate(sizes, "--use_ema", full=True).training_state == unet * 16
    partitioned = _estimate(sizes, full=True, partitioned=True)  # ZeRO holds them elsewhere
    assert partitioned.training_state == 0
    assert partitioned.weights == _estimate(sizes, full=True).weights - unet * 4
    adapters = lora_adapter_parameters(sizes, 16)
    assert 0 < adapters < unet
    assert _estimate(sizes, "--network_dim", "16").training_state == adapters * (4 + 4 + 8)
    assert lora_adapter_parameters(sizes, 64) == 4 * adapters


def test_a_flux_full_fine_tune_counts_clip_l_as_trained_and_t5_as_frozen(tiny_model_factory):
    flux = read_model_sizes(tiny_model_factory("flux1-dev").folder)
    trained = flux.denoiser_parameters + flux.parameters["text_encoder"]  # CLIP-L; T5 is text_encoder_2
    assert flux.parameters["text_encoder_2"] > 0
    assert _estimate(flux, "--train_text_encoder", full=True).training_state == trained * (4 + 8)


def test_a_dataset_toml_gives_its_largest_batch(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    dataset_toml = tmp_path / "dataset.toml"
    dataset_toml.write_text(
        f"[[datasets]]\nresolution = 1024\nbatch_size = 1\n[[datasets.subsets]]\nimage_dir = '{images}'\n"
        f"[[datasets]]\nresolution = [768, 512]\nbatch_size = 4\n[[datasets.subsets]]\nimage_dir = '{images}'\n",
        encoding="utf-8",
    )
    batch = largest_batch(_config("--train_data_dir", "", "--dataset_config", str(dataset_toml)))
    assert (batch.width, batch.height, batch.batch_size) == (768, 512, 4)
    assert batch.settings == f"{dataset_toml}: datasets[1].resolution = [768, 512] with batch_size = 4"


def test_the_refusal_names_the_largest_term(sizes):
    available = Available(2**20, "RAM and swap")
    config = _config("--resolution", "2048", "--train_batch_size", "8")
    batch = largest_batch(config)
    line = refusal(config, sizes, batch, estimate_memory(config, sizes, batch, False, FP32, False), available, False)
    assert line.startswith("dataset.resolution = 2048 with dataset.batch_size = 8 needs about ")
    assert "1 MiB available (RAM and swap)" in line and "training.gradient_checkpointing" in line
    assert line.endswith("or set training.skip_memory_check = true")

    small = LargestBatch(64, 64, 1, "dataset.resolution = 64 with dataset.batch_size = 1")
    config = _config()
    line = refusal(config, sizes, small, estimate_memory(config, sizes, small, False, FP32, False), available, False)
    assert "base.safetensors (sd1) needs about" in line and 'training.mixed_precision = "bf16"' in line
    line = refusal(config, sizes, small, estimate_memory(config, sizes, small, True, FP32, False), available, True)
    assert 'training with optimizer.type = "AdamW" needs about' in line
    adafactor = _config("--optimizer_type", "Adafactor")  # a full fine-tune's weights: fp8_base cannot help it
    line = refusal(adafactor, sizes, small, estimate_memory(adafactor, sizes, small, True, FP32, False), available,
                   True)
    assert line.split("; ")[-1].startswith('train a LoRA (dreambooth.train_method = "lora") or use a machine with')


def test_the_machine_figure(monkeypatch):
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    measured = available_memory(torch.device("cpu"))
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo", encoding="ascii"))
    total = (int(meminfo["MemTotal"].split()[0]) + int(meminfo["SwapTotal"].split()[0])) * 1024
    assert measured is not None and 0 < measured.bytes <= total
    monkeypatch.setenv(MEMORY_ENV, "12345")
    assert available_memory(torch.device("cpu")) == Available(12345, f"${MEMORY_ENV}")
