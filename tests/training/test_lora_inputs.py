"""Each bad input's documented behaviour, sd-scripts dataset files, and other families."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open

from trainer_cli import base_args, read_events, run_cli

pytestmark = pytest.mark.slow  # these tests start processes or trainers


def test_bad_config_value_exits_2_with_one_line(tiny_model_factory, concept_dataset, tmp_path):
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path, network_dim=0)
    result = run_cli("train_network.py", args, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--network_dim" in result.stderr and "network.dim" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_is_one_clear_line(concept_dataset, tmp_path):
    args = base_args(tmp_path / "no-such-model", concept_dataset, tmp_path / "out")
    result = run_cli("train_network.py", args, check=False)
    assert result.returncode == 1
    assert "no-such-model" in result.stderr and "diffusers folder" in result.stderr
    assert "Traceback" not in result.stderr
    errors = [event for event in read_events(tmp_path / "out") if event["event"] == "error"]
    assert len(errors) == 1 and "no-such-model" in errors[0]["message"]


def test_fp16_on_cpu_is_refused_before_loading(tiny_model_factory, concept_dataset, tmp_path):
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path, mixed_precision="fp16")
    result = run_cli("train_network.py", args, check=False)
    assert result.returncode == 1
    assert "fp16" in result.stderr and "bf16" in result.stderr


def _dataset_with_corrupt_image(source, target):
    shutil.copytree(source, target)
    broken = next(target.glob("*_frnc")) / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    broken.with_suffix(".txt").write_text("frnc")
    return broken


def test_corrupt_image_fails_at_scan_or_is_skipped(tiny_model_factory, concept_dataset, tmp_path):
    dataset = tmp_path / "data"
    broken = _dataset_with_corrupt_image(concept_dataset, dataset)
    model = tiny_model_factory("sd1").folder
    failed = run_cli("train_network.py", base_args(model, dataset, tmp_path / "a", max_train_steps=2), check=False)
    assert failed.returncode == 1
    assert "broken.png" in failed.stderr and "Traceback" not in failed.stderr
    events = read_events(tmp_path / "a")
    assert not any(event["event"] == "step" for event in events)
    assert "broken.png" in events[-1]["message"] and events[-1]["event"] == "error"
    skipped = run_cli(
        "train_network.py",
        [*base_args(model, dataset, tmp_path / "b", max_train_steps=2), "--dataset.on_bad_image", "skip"],
    )
    assert "broken.png" in skipped.stderr
    assert (tmp_path / "b" / "lora.safetensors").is_file()
    assert broken.exists()


def test_nan_loss_stops_and_keeps_last_good_file(tiny_model_factory, concept_dataset, tmp_path, monkeypatch):
    """The loss turns NaN at step 3 (as an fp16 overflow would): the run stops there, the step-2 file stays."""
    from library.config import load_config
    from library.training import trainer
    from library.training.exceptions import NonFiniteLossError
    from library.training.lora_weights import LoraWeights

    from library.training.diffusion_step import DiffusionObjective

    real_loss = DiffusionObjective.loss
    calls = []

    def loss_that_overflows(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(DiffusionObjective, "loss", loss_that_overflows)
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path, save_every_n_steps=1)
    config = load_config(None, args)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.train(config, LoraWeights)
    message = str(error.value)
    assert "at step 3" in message and "lora-step00000002.safetensors" in message
    errors = [event for event in read_events(tmp_path) if event["event"] == "error"]
    assert errors and errors[0]["step"] == 3
    assert (tmp_path / "lora-step00000002.safetensors").is_file()
    assert not (tmp_path / "lora.safetensors").exists()


def test_sd_scripts_dataset_toml_with_reg_subset_runs(tiny_model_factory, concept_dataset, tmp_path):
    reg = tmp_path / "reg"
    shutil.copytree(next(concept_dataset.glob("*_frnc")), reg / "circles")
    for caption in (reg / "circles").glob("*.txt"):
        caption.write_text("red circle")
    toml = tmp_path / "dataset.toml"
    toml.write_text(
        f"""
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1

[[datasets]]
resolution = 64
batch_size = 2

  [[datasets.subsets]]
  image_dir = '{next(concept_dataset.glob("*_frnc"))}'
  num_repeats = 2
  class_tokens = "frnc"

  [[datasets.subsets]]
  image_dir = '{next(concept_dataset.glob("*_frnc"))}'
  num_repeats = 1
  flip_aug = true

  [[datasets.subsets]]
  is_reg = true
  image_dir = '{reg / "circles"}'
  class_tokens = "red circle"
  num_repeats = 1
"""
    )
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out", max_train_steps=4)
    args = [a for a in args if a not in ("--train_data_dir", str(concept_dataset))]
    run_cli("train_network.py", [*args, "--dataset_config", str(toml), "--prior_loss_weight", "0.5"])
    with safe_open(str(tmp_path / "out" / "lora.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert int(metadata["ss_num_reg_images"]) == 12
    assert json.loads(metadata["ss_dataset_dirs"]) == {
        "5_frnc": {"n_repeats": 2, "img_count": 12},
        "5_frnc (2)": {"n_repeats": 1, "img_count": 12},
    }
    assert json.loads(metadata["ss_reg_dataset_dirs"]) == {"circles": {"n_repeats": 1, "img_count": 12}}
    assert str(tmp_path) not in json.dumps(metadata)


def test_sd2_v_lora_metadata(tiny_model_factory, concept_dataset, tmp_path):
    model = tiny_model_factory("sd2-v").single_file
    run_cli("train_network.py", base_args(model, concept_dataset, tmp_path, max_train_steps=2))
    with safe_open(str(tmp_path / "lora.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        keys = list(handle.keys())
    assert metadata["ss_base_model_version"] == "sd_v2_v"
    assert metadata["ss_v2"] == "True"
    assert metadata["modelspec.prediction_type"] == "v"
    assert any(key.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for key in keys)
    assert any(key.startswith("lora_unet_down_blocks_0_attentions_0_proj_in") for key in keys)
