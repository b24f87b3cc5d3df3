"""train_dreambooth.py: class-image generation, full fine-tune checkpoints, prior-loss logging, exact resume, LoRA mode."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trainer_cli import base_args, read_events, run_cli

from library.models.loader import load_base_model

pytestmark = pytest.mark.slow  # these tests start processes or trainers


def _dreambooth_args(model, dataset, output, class_dir, **overrides):
    settings = {
        "instance_prompt": "a photo of frnc circle",
        "class_prompt": "a photo of a circle",
        "class_data_dir": class_dir,
        "num_class_images": 6,
        "learning_rate": 1e-4,
        "max_train_steps": 4,
    }
    settings.update(overrides)
    return base_args(model, dataset, output, **settings) + ["--dreambooth.class_generation_steps", "2"]


def _digest(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def full_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("dreambooth")
    class_dir = root / "class"
    args = _dreambooth_args(tiny_model_factory("sd1").folder, concept_dataset, root / "out", class_dir)
    result = run_cli("train_dreambooth.py", [*args, "--train_text_encoder", "true", "--save_diffusers", "true"])
    return root, class_dir, args, result


def test_class_images_fill_the_folder_exactly_then_are_skipped(full_run, tiny_model_factory, concept_dataset):
    root, class_dir, args, _ = full_run
    assert len(list(class_dir.glob("*.png"))) == 6
    assert all(path.with_suffix(".txt").read_text().strip() == "a photo of a circle" for path in class_dir.glob("*.png"))
    seeds = []
    for path in sorted(class_dir.glob("*.png")):   # each carries its settings as A1111 writes them
        with Image.open(path) as image:
            prompt, settings = image.text["parameters"].split("\n")
        assert prompt == "a photo of a circle" and settings.startswith("Steps: 2, Sampler: ")
        seeds.append(int(settings.split("Seed: ")[1].split(",")[0]))
    assert seeds == list(range(seeds[0], seeds[0] + 6))   # training.seed + the image's index
    before = _digest(class_dir)
    second = run_cli("train_dreambooth.py", [*args, "--output_dir", str(root / "again"), "--max_train_steps", "1"])
    assert "none generated" in second.stderr
    assert _digest(class_dir) == before


def test_interrupted_generation_continues_with_the_same_images(full_run, tiny_model_factory, concept_dataset, tmp_path):
    _, class_dir, _, _ = full_run
    partial = tmp_path / "class"
    partial.mkdir()
    for name in ("class_00000.png", "class_00003.png"):  # as if a run stopped after writing these
        (partial / name).write_bytes((class_dir / name).read_bytes())
    args = _dreambooth_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out", partial)
    run_cli("train_dreambooth.py", [*args, "--max_train_steps", "1"])
    assert sorted(_digest(partial)) == sorted(_digest(class_dir))
    for name in _digest(class_dir):  # each image's seed follows its index, not its batch
        resumed = np.asarray(Image.open(partial / name), dtype=np.int16)
        original = np.asarray(Image.open(class_dir / name), dtype=np.int16)
        assert np.abs(resumed - original).max() <= 2, name  # batch shape only moves float rounding


def test_checkpoint_loads_in_our_loader_and_in_diffusers(full_run, tiny_model_factory):
    from diffusers import StableDiffusionPipeline

    root, _, _, _ = full_run
    checkpoint = root / "out" / "lora.safetensors"
    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
        assert any(key.startswith("model.diffusion_model.") for key in handle.keys())
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert metadata["ss_steps"] == "4"
    tuned = load_base_model(checkpoint)
    base = load_base_model(tiny_model_factory("sd1").folder)
    changed = [k for k, v in tuned.unet.state_dict().items() if not torch.equal(v, base.unet.state_dict()[k])]
    assert changed, "the UNet was fine-tuned"
    te_changed = [
        k for k, v in tuned.text_encoders[0].state_dict().items()
        if not torch.equal(v, base.text_encoders[0].state_dict()[k])
    ]
    assert te_changed, "the text encoder was trained (train_text_encoder)"
    pipeline = StableDiffusionPipeline.from_single_file(
        str(checkpoint), config=str(tiny_model_factory("sd1").folder), local_files_only=True
    )
    for key, tensor in tuned.unet.state_dict().items():
        assert torch.equal(tensor, pipeline.unet.state_dict()[key]), key

    def render(unet):
        pipeline.unet = unet
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        return pipeline("frnc", num_inference_steps=2, height=64, width=64, generator=generator, output_type="np")

    assert abs(render(tuned.unet).images - render(base.unet).images).max() > 1e-3
    assert (root / "out" / "lora_diffusers" / "model_index.json").is_file()


def test_instance_and_prior_losses_and_class_image_progress_are_logged(full_run):
    root, _, _, _ = full_run
    steps = [event for event in read_events(root / "out") if event["event"] == "step"]
    assert steps and all("instance_loss" in event or "prior_loss" in event for event in steps)
    assert any("prior_loss" in event for event in steps) and any("instance_loss" in event for event in steps)
    generated = [(event["done"], event["total"]) for event in read_events(root / "out")
                 if event["event"] == "class_images"]   # the GUI's class-image progress
    assert generated[0] == (0, 6) and generated[-1] == (6, 6)
    accumulator = EventAccumulator(str(next((root / "out" / "logs").rglob("events.out.tfevents.*")).parent))
    accumulator.Reload()
    assert {"loss/instance", "loss/prior"} <= set(accumulator.Tags()["scalars"])


def test_full_fine_tune_resume_is_exact(tiny_model_factory, concept_dataset, tmp_path):
    model = tiny_model_factory("sd1").folder
    class_dir = tmp_path / "class"
    common = {"save_precision": "float", "use_ema": "true"}
    reference = _dreambooth_args(model, concept_dataset, tmp_path / "ref", class_dir, max_train_steps=4, **common)
    run_cli("train_dreambooth.py", reference)
    staged = tmp_path / "staged"
    first = _dreambooth_args(model, concept_dataset, staged, class_dir, max_train_steps=2, **common)
    run_cli("train_dreambooth.py", [*first, "--save_state_on_train_end", "true"])
    second = _dreambooth_args(model, concept_dataset, staged, class_dir, max_train_steps=4, **common)
    run_cli("train_dreambooth.py", [*second, "--resume", "latest"])
    a, b = load_file(tmp_path / "ref" / "lora.safetensors"), load_file(staged / "lora.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_lora_mode_writes_a_kohya_file(tiny_model_factory, concept_dataset, tmp_path):
    args = _dreambooth_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out", tmp_path / "class")
    run_cli("train_dreambooth.py", [*args, "--train_method", "lora"])
    with safe_open(str(tmp_path / "out" / "lora.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
    assert any(key.startswith("lora_unet_") and key.endswith("lora_down.weight") for key in keys)
    assert int(metadata["ss_num_reg_images"]) == 6


def test_full_fine_tune_with_memory_options_and_text_encoder_stop(tiny_model_factory, concept_dataset, tmp_path):
    """Gradient checkpointing + AdamW8bit + bf16 autocast in full mode; the text encoder trains for 2 steps only."""
    model = tiny_model_factory("sd1")
    output = tmp_path / "out"
    args = _dreambooth_args(model.folder, concept_dataset, output, tmp_path / "class", max_train_steps=4,
                            learning_rate=1e-3, train_text_encoder="true", stop_text_encoder_training=2,
                            gradient_checkpointing="true", optimizer_type="AdamW8bit", mixed_precision="bf16",
                            save_every_n_steps=2, save_state_on_train_end="true")
    result = run_cli("train_dreambooth.py", args)
    assert "step 2: text encoder training stopped" in result.stderr
    base = load_file(model.single_file)
    at_two, final = load_file(output / "lora-step00000002.safetensors"), load_file(output / "lora.safetensors")
    text_keys = [key for key in final if key.startswith("cond_stage_model.") and final[key].is_floating_point()]
    unet_keys = [key for key in final if key.startswith("model.diffusion_model.")]
    assert text_keys and unet_keys
    assert any(not torch.equal(at_two[key], base[key]) for key in text_keys)  # trained during steps 1-2
    assert all(torch.equal(final[key], at_two[key]) for key in text_keys)  # frozen from step 2 on
    assert any(not torch.equal(final[key], at_two[key]) for key in unet_keys)
    optimizer_state = torch.load(output / "state" / "optimizer.bin", weights_only=True)
    first = next(iter(optimizer_state["state"].values()))
    assert "__bnb_optimizer_quant_state__" in first, sorted(first)  # bitsandbytes' 8-bit state, not torch AdamW
