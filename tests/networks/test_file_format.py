"""The kohya LoRA file we write: key names, shapes, alpha, dtypes, metadata, hashes and the atomic write."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save, save_file
from torch import nn

from library.models.families import SD1
from library.networks import (
    DatasetInfo,
    LoraOptions,
    TrainingInfo,
    checkpoint_metadata,
    inject_lora,
    lora_metadata,
    read_lora_file,
    verify_hashes,
    write_lora_file,
)

DIM, ALPHA = 4, 2.0
_ATTENTION_BLOCK = re.compile(r"^(down_blocks\.(\d+)|mid_block|up_blocks\.(\d+))\.attentions\.(\d+)\.(.+)$")


def _sgm(path: str, layers_per_block: int) -> str:
    """The SGM spelling of a diffusers attention-block path, straight from the block arithmetic."""
    match = _ATTENTION_BLOCK.match(path)
    assert match, path
    down, up, layer, rest = match.group(2), match.group(3), int(match.group(4)), match.group(5)
    if down is not None:
        return f"input_blocks.{1 + int(down) * (layers_per_block + 1) + layer}.1.{rest}"
    if up is not None:
        return f"output_blocks.{int(up) * (layers_per_block + 1) + layer}.1.{rest}"
    return f"middle_block.1.{rest}"


def _expected_modules(family, components) -> dict[str, nn.Module]:
    """Kohya name -> base module for the default targets, derived from the architecture independently."""
    expected = {}
    layers = components.unet.config.layers_per_block
    for path, module in components.unet.named_modules():
        pointwise = isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1))
        if _ATTENTION_BLOCK.match(path) and pointwise:
            spelled = _sgm(path, layers) if family.name == "sdxl" else path
            expected["lora_unet_" + spelled.replace(".", "_")] = module
    prefixes = ["lora_te1_", "lora_te2_"] if family.name == "sdxl" else ["lora_te_"]
    for prefix, encoder in zip(prefixes, components.text_encoders):
        for path, module in encoder.named_modules():
            if isinstance(module, nn.Linear) and re.search(r"layers\.\d+\.(self_attn|mlp)\.", path):
                expected[prefix + "text_model_" + path.removeprefix("text_model.").replace(".", "_")] = module
    return expected


@pytest.mark.parametrize("family_name", ["sd1", "sd2-v", "sdxl"])
def test_keys_shapes_and_alpha(tiny, tmp_path, family_name):
    family, components = tiny(family_name)
    expected = _expected_modules(family, components)
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=DIM, alpha=ALPHA))
    path = tmp_path / "lora.safetensors"
    network.save(path, "float", {"ss_output_name": "lora"})
    tensors, _ = read_lora_file(path)

    suffixes = (".lora_down.weight", ".lora_up.weight", ".alpha")
    assert set(tensors) == {name + suffix for name in expected for suffix in suffixes}
    for name, module in expected.items():
        down, up, alpha = (tensors[name + suffix] for suffix in suffixes)
        out_features, in_features = module.weight.shape[:2]
        if isinstance(module, nn.Conv2d):
            assert down.shape == (DIM, in_features, 1, 1) and up.shape == (out_features, DIM, 1, 1)
        else:
            assert down.shape == (DIM, in_features) and up.shape == (out_features, DIM)
        assert alpha.shape == () and alpha.item() == ALPHA
        assert not up.any(), "a fresh adapter starts with up = 0"
        assert down.abs().max() > 0


def test_locon_conv_shapes_and_alpha(tiny, tmp_path):
    family, components = tiny("sd1")
    conv = components.unet.get_submodule("down_blocks.0.resnets.0.conv1")
    options = LoraOptions(dim=DIM, alpha=ALPHA, conv_dim=2, conv_alpha=0.5)
    network = inject_lora(family, components.unet, components.text_encoders, options)
    tensors = network.state_dict_kohya()
    name = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert tensors[f"{name}.lora_down.weight"].shape == (2, conv.in_channels, 3, 3)
    assert tensors[f"{name}.lora_up.weight"].shape == (conv.out_channels, 2, 1, 1)
    assert tensors[f"{name}.alpha"].item() == 0.5
    # Linear and 1x1 children of resnets take the regular dim/alpha.
    assert tensors["lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight"].shape[0] == DIM
    assert tensors["lora_unet_down_blocks_0_resnets_0_time_emb_proj.alpha"].item() == ALPHA
    assert tensors["lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight"].shape[0] == 2
    assert tensors["lora_unet_up_blocks_0_upsamplers_0_conv.lora_down.weight"].shape[0] == 2


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16), ("float", torch.float32)]
)
def test_save_precision(tiny, tmp_path, precision, dtype):
    family, components = tiny("sd1")
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=DIM, alpha=ALPHA))
    path = tmp_path / "lora.safetensors"
    network.save(path, precision, {})
    tensors, _ = read_lora_file(path)
    assert {tensor.dtype for tensor in tensors.values()} == {dtype}
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]


def _dataset_info() -> DatasetInfo:
    return DatasetInfo(
        num_train_images=12,
        num_reg_images=3,
        num_batches_per_epoch=6,
        batch_size_per_device=2,
        enable_bucket=True,
        min_bucket_reso=256,
        max_bucket_reso=1024,
        bucket_no_upscale=False,
        dataset_dirs={"10_sks dog": {"n_repeats": 10, "img_count": 12}},
        reg_dataset_dirs={},
        tag_frequency={"10_sks dog": {"sks dog": 12, "grass": 3}},
        bucket_info={"buckets": {"0": {"resolution": [64, 48], "count": 12}}},
        keep_tokens=1,
        shuffle_caption=True,
        caption_dropout_rate=0.0,
        caption_dropout_every_n_epochs=0,
        caption_tag_dropout_rate=0.1,
        flip_aug=False,
        color_aug=False,
        random_crop=False,
        prior_loss_weight=1.0,
        cache_latents=True,
        masked_loss=True,
    )


def _info(**overrides) -> TrainingInfo:
    values = dict(
        output_name="my-lora",
        resolution=(64, 48),
        learning_rate=1e-4,
        unet_lr=2e-4,
        num_epochs=2,
        epoch=1,
        steps=30,
        max_train_steps=60,
        optimizer="AdamW8bit",
        seed=42,
        clip_skip=2,
        min_snr_gamma=5.0,
        training_started_at=1_700_000_000.5,
        training_finished_at=1_700_000_100.0,
        session_id="1234",
        dataset=_dataset_info(),
    )
    values.update(overrides)
    return TrainingInfo(**values)


@pytest.mark.parametrize(
    ("family_name", "version", "v2", "architecture", "prediction", "implementation"),
    [
        ("sd1", "sd_v1", "False", "stable-diffusion-v1/lora", "epsilon", "diffusers"),
        ("sd2-v", "sd_v2_v", "True", "stable-diffusion-v2-768-v/lora", "v", "diffusers"),
        ("sdxl", "sdxl_base_v1-0", "False", "stable-diffusion-xl-v1-base/lora", "epsilon",
         "https://github.com/Stability-AI/generative-models"),
    ],
)
def test_metadata_values(tiny, tmp_path, family_name, version, v2, architecture, prediction, implementation):
    family, components = tiny(family_name)
    options = LoraOptions(dim=DIM, alpha=ALPHA, conv_dim=2)
    network = inject_lora(family, components.unet, components.text_encoders, options)
    path = tmp_path / "lora.safetensors"
    network.save(path, "fp16", lora_metadata(family, options, _info(), title="My LoRA"))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()

    assert all(isinstance(value, str) for value in metadata.values())
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "2.0"
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}
    assert metadata["ss_base_model_version"] == version and metadata["ss_v2"] == v2
    assert metadata["ss_resolution"] == "(64, 48)"
    assert metadata["ss_learning_rate"] == "0.0001" and metadata["ss_unet_lr"] == "0.0002"
    assert metadata["ss_text_encoder_lr"] == "None"
    assert metadata["ss_num_train_images"] == "12" and metadata["ss_num_reg_images"] == "3"
    assert (metadata["ss_epoch"], metadata["ss_steps"], metadata["ss_max_train_steps"]) == ("1", "30", "60")
    assert metadata["ss_optimizer"] == "AdamW8bit" and metadata["ss_seed"] == "42"
    assert metadata["ss_clip_skip"] == "2" and metadata["ss_min_snr_gamma"] == "5.0"
    assert metadata["ss_training_started_at"] == "1700000000.5"
    assert metadata["ss_output_name"] == "my-lora" and metadata["ss_session_id"] == "1234"
    assert json.loads(metadata["ss_tag_frequency"]) == {"10_sks dog": {"sks dog": 12, "grass": 3}}
    assert json.loads(metadata["ss_dataset_dirs"]) == {"10_sks dog": {"n_repeats": 10, "img_count": 12}}
    assert json.loads(metadata["ss_bucket_info"])["buckets"]["0"]["count"] == 12
    assert metadata["modelspec.sai_model_spec"] == "1.0.1"
    assert metadata["modelspec.architecture"] == architecture
    assert metadata["modelspec.implementation"] == implementation
    assert metadata["modelspec.prediction_type"] == prediction
    assert metadata["modelspec.title"] == "My LoRA"
    assert metadata["modelspec.resolution"] == "64x48"
    assert metadata["modelspec.date"] == datetime.fromtimestamp(1_700_000_000).isoformat()
    assert metadata["ss_shuffle_caption"] == "True" and metadata["ss_caption_tag_dropout_rate"] == "0.1"
    assert metadata["ss_num_batches_per_epoch"] == "6" and json.loads(metadata["ss_reg_dataset_dirs"]) == {}
    assert metadata["ss_masked_loss"] == "True"


def test_checkpoint_metadata_is_the_lora_record_without_network_keys():
    info = _info()
    lora = lora_metadata(SD1, LoraOptions(dim=DIM, alpha=ALPHA), info)
    checkpoint = checkpoint_metadata(SD1, info)
    network_keys = {key for key in lora if key.startswith("ss_network_")}
    assert network_keys == {f"ss_network_{name}" for name in ("module", "dim", "alpha", "dropout", "args")}
    assert {k: v for k, v in lora.items() if k not in network_keys and k != "modelspec.architecture"} == {
        k: v for k, v in checkpoint.items() if k != "modelspec.architecture"
    }
    assert checkpoint["modelspec.architecture"] == "stable-diffusion-v1"
    assert checkpoint["ss_steps"] == "30" and checkpoint["ss_base_model_version"] == "sd_v1"


def test_files_no_run_trained_carry_no_dataset_record():
    metadata = lora_metadata(SD1, LoraOptions(dim=DIM, alpha=ALPHA), _info(dataset=None))
    assert "ss_dataset_dirs" not in metadata and "ss_num_train_images" not in metadata
    assert metadata["ss_steps"] == "30" and metadata["ss_network_dim"] == "4"


def _reference_hashes(tensors: dict, metadata: dict) -> tuple[str, str]:
    """The two hashes by their definition, over the file serialised with only its ss_* metadata."""
    data = save(tensors, metadata={k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_length = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_length :]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy_hash


@pytest.mark.parametrize("width", [64, 4096])  # a small file (legacy hash of empty input) and one over 1 MiB
def test_hashes(tmp_path, width):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "lora_unet_x.lora_down.weight": torch.randn(64, width, generator=generator),
        "lora_unet_x.lora_up.weight": torch.randn(width, 64, generator=generator),
        "lora_unet_x.alpha": torch.tensor(8.0),
    }
    metadata = {"ss_network_dim": "64", "ss_output_name": "x", "modelspec.title": "x"}
    path = tmp_path / "x.safetensors"
    written = write_lora_file(path, tensors, metadata)

    tensors_read, stored = read_lora_file(path)
    assert stored == written
    model_hash, legacy_hash = _reference_hashes(tensors_read, stored)
    assert stored["sshs_model_hash"] == model_hash
    assert stored["sshs_legacy_hash"] == legacy_hash
    assert (legacy_hash == "e3b0c442") == (width == 64)
    assert verify_hashes(path)

    # Metadata outside ss_* does not change the hashes; changed weights are detected.
    again = write_lora_file(tmp_path / "y.safetensors", tensors, {**metadata, "modelspec.title": "other"})
    assert again["sshs_model_hash"] == model_hash and again["sshs_legacy_hash"] == legacy_hash
    tampered = {**tensors_read, "lora_unet_x.alpha": torch.tensor(4.0)}
    save_file(tampered, str(path), metadata=stored)
    assert not verify_hashes(path)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "lora.safetensors"
    tensors = {
        "m.lora_down.weight": torch.ones(2, 3),
        "m.lora_up.weight": torch.ones(3, 2),
        "m.alpha": torch.tensor(2.0),
    }
    write_lora_file(path, tensors, {"ss_steps": "1"})
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_lora_file(path, {k: v * 2 for k, v in tensors.items()}, {"ss_steps": "2"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lora.safetensors"]
