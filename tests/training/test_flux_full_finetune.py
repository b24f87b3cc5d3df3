"""DreamBooth full fine-tune of a tiny FLUX.1 through train_dreambooth.py: prior preservation with generated class
images, the transformer and CLIP-L trained while T5 stays frozen, a ComfyUI-style checkpoint our loader reads back
as the same variant, a FluxPipeline folder with the flow-matching scheduler, an exact resume; a full-size FLUX.1
is refused on its memory estimate before anything loads."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from library.models.loader import load_base_model
from library.models.single_file import reference_configs
from library.training.available_memory import MEMORY_ENV
from trainer_cli import REPO, read_events, run_cli, run_python

pytestmark = pytest.mark.slow  # starts trainers

CONFIG = str(REPO / "configs" / "flux1_quickstart.toml")


def _args(model, dataset, output, *extra: str, steps: int = 4) -> list[str]:
    """The FLUX.1 quickstart as a full fine-tune: a few steps at 64 px (T5 and CLIP-L outputs cached)."""
    return [
        "--config", CONFIG, "--train_method", "full", "--pretrained_model_name_or_path", str(model),
        "--train_data_dir", str(dataset), "--output_dir", str(output), "--output_name", "model",
        "--instance_prompt", "frnc circle", "--max_train_steps", str(steps), "--save_precision", "float",
        "--learning_rate", "1e-4", *extra,
    ]


def _prior(class_dir) -> list[str]:
    return ["--class_prompt", "a circle", "--class_data_dir", str(class_dir), "--num_class_images", "2",
            "--dreambooth.class_generation_steps", "2"]


@pytest.fixture(scope="module")
def full_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-full")
    model = tiny_model_factory("flux1-dev").folder
    run_cli("train_dreambooth.py", _args(model, concept_dataset, root / "out", *_prior(root / "class"),
                                         "--train_text_encoder", "true", "--cache_text_encoder_outputs", "false",
                                         "--use_ema", "true", "--save_diffusers", "true"))
    return root / "out", model


def _changed(tuned: torch.nn.Module, base: torch.nn.Module) -> tuple[int, int]:
    """(tensors that differ, tensors) between two modules of the same architecture."""
    ours, theirs = tuned.state_dict(), base.state_dict()
    return sum(not torch.equal(tensor, theirs[key]) for key, tensor in ours.items()), len(ours)


def test_the_checkpoint_loads_as_flux1_dev_with_the_transformer_and_clip_l_trained_and_t5_frozen(full_run):
    output, model = full_run
    checkpoint = output / "model.safetensors"
    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata, keys = handle.metadata(), list(handle.keys())
    assert {key.split(".")[0] for key in keys} == {"model", "vae", "text_encoders"}  # ComfyUI's full checkpoint
    assert any(key.startswith("model.diffusion_model.double_blocks.0.img_attn.qkv.") for key in keys)
    assert metadata["modelspec.architecture"] == "flux-1-dev" and metadata["ss_num_reg_images"] == "2"
    assert metadata["ss_steps"] == "4" and metadata["ss_ema_decay"] == "0.9999"
    tuned, base = load_base_model(checkpoint), load_base_model(model)
    assert tuned.family.name == "flux1-dev"
    changed, total = _changed(tuned.unet, base.unet)
    assert changed > total // 2, (changed, total)
    assert _changed(tuned.text_encoders[0], base.text_encoders[0])[0] > 0  # CLIP-L (train_text_encoder)
    assert _changed(tuned.text_encoders[1], base.text_encoders[1])[0] == 0  # T5 stays frozen
    assert _changed(tuned.vae, base.vae)[0] == 0


def test_prior_preservation_splits_the_loss(full_run):
    output, _ = full_run
    steps = [event for event in read_events(output) if event["event"] == "step"]
    assert len(steps) == 4
    assert any("prior_loss" in event for event in steps) and any("instance_loss" in event for event in steps)


def test_the_diffusers_folder_is_a_flux_pipeline_with_the_flow_matching_scheduler(full_run):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    output, _ = full_run
    folder = output / "model_diffusers"
    assert json.loads((folder / "model_index.json").read_text())["scheduler"][1] == "FlowMatchEulerDiscreteScheduler"
    pipeline = FluxPipeline.from_pretrained(folder, local_files_only=True)
    assert isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipeline.scheduler.config.use_dynamic_shifting  # FLUX.1-dev's schedule, shifted by image size
    tuned = load_base_model(output / "model.safetensors")
    assert _changed(pipeline.transformer, tuned.unet)[0] == 0  # the same (EMA) weights as the single file


def test_resume_is_exact(tiny_model_factory, concept_dataset, tmp_path):
    model = tiny_model_factory("flux1-dev").folder
    ema = ("--use_ema", "true")
    run_cli("train_dreambooth.py", _args(model, concept_dataset, tmp_path / "ref", *ema))
    staged = tmp_path / "staged"
    run_cli("train_dreambooth.py", _args(model, concept_dataset, staged, *ema, "--save_state_on_train_end", "true",
                                         steps=2))
    run_cli("train_dreambooth.py", _args(model, concept_dataset, staged, *ema, "--resume", "latest"))
    reference, resumed = load_file(tmp_path / "ref" / "model.safetensors"), load_file(staged / "model.safetensors")
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[key], resumed[key]) for key in reference)


def test_a_schnell_checkpoint_fine_tunes_and_loads_back_as_schnell(tiny_model_factory, concept_dataset, tmp_path):
    base = tiny_model_factory("flux1-schnell").single_file
    run_cli("train_dreambooth.py", _args(base, concept_dataset, tmp_path / "out", steps=1))
    checkpoint = tmp_path / "out" / "model.safetensors"
    with safe_open(str(checkpoint), framework="pt") as handle:
        assert handle.metadata()["modelspec.architecture"] == "flux-1-schnell"
        assert not any("guidance_in" in key for key in handle.keys())
    tuned = load_base_model(checkpoint)
    assert tuned.family.name == "flux1-schnell"
    assert _changed(tuned.unet, load_base_model(base).unet)[0] > 0


def test_a_full_size_flux_full_fine_tune_is_refused_on_its_memory_estimate_before_loading(
        tiny_model_factory, concept_dataset, tmp_path):
    """A FLUX.1-dev folder of configs only (the real sizes, no weights: loading it would fail with another line):
    refused in one line naming the estimate and the memory available."""
    folder = tmp_path / "flux1-dev"
    folder.mkdir()
    index = tiny_model_factory("flux1-dev").folder / "model_index.json"
    (folder / "model_index.json").write_text(index.read_text())
    for name, config in reference_configs("flux1-dev").items():
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(json.dumps(config))
    machine = {MEMORY_ENV: str(128 * 2**30)}  # a large workstation
    result = run_python([str(REPO / "train_dreambooth.py"), *_args(folder, concept_dataset, tmp_path / "out")],
                        "train_dreambooth.py", check=False, env=machine)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert 'training with optimizer.type = "AdamW" needs about 133.' in errors[0]
    assert f"128.0 GiB available (${MEMORY_ENV}); train a LoRA" in errors[0]
    assert not (tmp_path / "out" / "model.safetensors").exists()
