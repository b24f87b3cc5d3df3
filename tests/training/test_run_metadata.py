"""The ss_* / modelspec metadata of the files real runs write, checked value by value against facts computed here from
the dataset on disk and the run's settings (real trainer CLIs, files read back)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save
from trainer_cli import base_args, run_cli

from library.data.synthetic import write_dataset

pytestmark = pytest.mark.slow

CLASS_PROMPT = "a photo of a circle"


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()


def _folder_facts(folder: Path, caption: str | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """({n_repeats, img_count}, {tag: captions holding it}) of an ``N_name`` folder (or a plain one, 1 repeat),
    from its files; images without a caption file count ``caption``."""
    images = sorted(folder.glob("*.png"))
    prefix = folder.name.split("_", 1)[0]
    repeats = int(prefix) if prefix.isdigit() else 1
    tags: Counter[str] = Counter()
    for image in images:
        text = image.with_suffix(".txt").read_text() if image.with_suffix(".txt").exists() else caption
        tags.update({tag.strip() for tag in text.split(",") if tag.strip()})
    return {"n_repeats": repeats, "img_count": len(images)}, dict(tags)


def _sshs_hashes(path: Path) -> tuple[str, str]:
    """Both hashes by their definition: sha256 of the file's tensor data, and the legacy 8 hex digits over the
    0x10000 bytes at 0x100000 of the file serialised with only its ss_* metadata."""
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    tensors, metadata = _read(path)
    canonical = save(tensors, metadata={key: value for key, value in metadata.items() if key.startswith("ss_")})
    return hashlib.sha256(data[8 + header :]).hexdigest(), hashlib.sha256(canonical[0x100000:0x110000]).hexdigest()[:8]


@pytest.fixture(scope="module")
def lora_run(tiny_model_factory, tmp_path_factory) -> Path:
    """4 images x 1 repeat, batch 2: 2 steps an epoch, 3 epochs, a file after each; a LoCon network."""
    root = tmp_path_factory.mktemp("metadata-lora")
    write_dataset(root / "data", count=4, repeats=1, seed=5)
    args = base_args(tiny_model_factory("sd1").folder, root / "data", root / "out", max_train_epochs=3,
                     save_every_n_epochs=1, network_dim=4, network_alpha=2)
    run_cli("train_network.py", [*args, "--network.conv_dim", "2", "--network.dropout", "0.1"])
    return root


def test_lora_files_record_the_run(lora_run):
    folder = lora_run / "data" / "1_frnc"
    dirs, tags = _folder_facts(folder)
    files = {stem: lora_run / "out" / f"{stem}.safetensors" for stem in ("lora-000001", "lora-000002", "lora")}
    sessions = set()
    for (stem, path), (epoch, steps) in zip(files.items(), [(1, 2), (2, 4), (3, 6)]):
        _, metadata = _read(path)
        assert (metadata["ss_epoch"], metadata["ss_steps"]) == (str(epoch), str(steps)), stem
        assert (metadata["ss_num_epochs"], metadata["ss_max_train_steps"]) == ("3", "6")
        assert metadata["ss_num_batches_per_epoch"] == "2" and metadata["ss_batch_size_per_device"] == "2"
        assert metadata["ss_resolution"] == "(64, 64)" and metadata["modelspec.resolution"] == "64x64"
        assert json.loads(metadata["ss_dataset_dirs"]) == {folder.name: dirs}
        assert json.loads(metadata["ss_reg_dataset_dirs"]) == {}
        assert json.loads(metadata["ss_tag_frequency"]) == {folder.name: tags}
        assert (metadata["ss_num_train_images"], metadata["ss_num_reg_images"]) == ("4", "0")
        assert (metadata["ss_network_module"], metadata["ss_network_dim"], metadata["ss_network_alpha"]) == (
            "networks.lora", "4", "2.0")
        assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}
        assert metadata["ss_network_dropout"] == "0.1"
        assert (metadata["ss_base_model_version"], metadata["ss_v2"]) == ("sd_v1", "False")
        assert metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
        assert (metadata["ss_learning_rate"], metadata["ss_seed"], metadata["ss_output_name"]) == ("0.001", "1", "lora")
        assert (metadata["sshs_model_hash"], metadata["sshs_legacy_hash"]) == _sshs_hashes(path)
        assert (metadata["ss_training_finished_at"] == "None") == (stem != "lora")
        sessions.add(metadata["ss_session_id"])
    assert len(sessions) == 1 and len(next(iter(sessions))) == 32


@pytest.fixture(scope="module")
def dreambooth_run(tiny_model_factory, tmp_path_factory) -> Path:
    """A full fine-tune with prior preservation (4 class images, no captions) and a frozen text encoder
    (``text_encoder_lr = 0`` although ``train_text_encoder`` is on): 8 samples, 4 steps an epoch, 2 epochs."""
    root = tmp_path_factory.mktemp("metadata-dreambooth")
    write_dataset(root / "data", count=4, repeats=1, seed=5)
    class_dir = write_dataset(root / "classes", count=4, repeats=1, seed=6).rename(root / "class")
    for caption in class_dir.glob("*.txt"):
        caption.unlink()
    args = base_args(tiny_model_factory("sd1").folder, root / "data", root / "out", output_name="tuned",
                     max_train_epochs=2, learning_rate=1e-4, instance_prompt="a photo of frnc",
                     class_prompt=CLASS_PROMPT, class_data_dir=class_dir, train_text_encoder="true",
                     text_encoder_lr=0)
    run_cli("train_dreambooth.py", args)
    return root


def test_full_checkpoint_records_the_run(dreambooth_run):
    folder, class_dir = dreambooth_run / "data" / "1_frnc", dreambooth_run / "class"
    dirs, tags = _folder_facts(folder)
    class_dirs, class_tags = _folder_facts(class_dir, caption=CLASS_PROMPT)
    _, metadata = _read(dreambooth_run / "out" / "tuned.safetensors")
    assert (metadata["ss_epoch"], metadata["ss_steps"], metadata["ss_num_epochs"]) == ("2", "8", "2")
    assert metadata["ss_max_train_steps"] == "8" and metadata["ss_num_batches_per_epoch"] == "4"
    assert metadata["ss_resolution"] == "(64, 64)" and metadata["modelspec.resolution"] == "64x64"
    assert json.loads(metadata["ss_dataset_dirs"]) == {folder.name: dirs}
    assert json.loads(metadata["ss_reg_dataset_dirs"]) == {"class": class_dirs}
    assert json.loads(metadata["ss_tag_frequency"]) == {folder.name: tags, "class": class_tags}
    assert (metadata["ss_num_train_images"], metadata["ss_num_reg_images"]) == ("4", "4")
    assert (metadata["ss_base_model_version"], metadata["ss_v2"]) == ("sd_v1", "False")
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert (metadata["ss_learning_rate"], metadata["ss_text_encoder_lr"]) == ("0.0001", "0.0")
    assert metadata["ss_training_finished_at"] != "None"
    assert not [key for key in metadata if key.startswith(("ss_network", "sshs_"))]  # a model, not an adapter


def test_full_fine_tune_with_text_encoder_rate_0_keeps_the_text_encoder(dreambooth_run, tiny_model_factory):
    tuned, _ = _read(dreambooth_run / "out" / "tuned.safetensors")
    base, _ = _read(tiny_model_factory("sd1").single_file)
    encoder = [key for key in base if key.startswith("cond_stage_model.")]
    unet = [key for key in base if key.startswith("model.diffusion_model.")]
    assert encoder and all(torch.equal(tuned[key], base[key]) for key in encoder)
    assert any(not torch.equal(tuned[key], base[key]) for key in unet)
