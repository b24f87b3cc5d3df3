"""Previews rendered with the live modules: files, determinism, live weights, untouched training state."""

from __future__ import annotations

import dataclasses
import random
import re

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from peft import LoraConfig, inject_adapter_in_model
from PIL import Image

from library.sampling.preview import generate_images, render_samples
from library.sampling.prompts import SamplePrompt

pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")


def _prompt(text: str = "a red ball on grass", **options) -> SamplePrompt:
    settings = {"width": 64, "height": 64, "steps": 3, "cfg_scale": 5.0, "seed": 1, "sampler": "ddim", **options}
    return SamplePrompt(prompt=text, **settings)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _render_one(model, **options) -> np.ndarray:
    (image,) = generate_images(model, [_prompt(**options)])
    return _pixels(image)


def test_previews_written_with_names_sizes_and_pixels(tmp_path, sd1_model):
    prompts = [_prompt(seed=5), _prompt("ein blauer Würfel 🎲", width=128, seed=9, sampler="euler_a")]
    previews = render_samples(sd1_model, prompts, tmp_path, "sks_dog", step=12)

    sample_dir = tmp_path / "sample"
    names = ["sks_dog_000012_00_5.png", "sks_dog_000012_01_9.png"]
    assert [preview.path for preview in previews] == [sample_dir / name for name in names]
    assert sorted(path.name for path in sample_dir.iterdir()) == names  # no .tmp left behind
    for preview, prompt in zip(previews, prompts):
        assert preview.prompt == prompt
        with Image.open(preview.path) as saved:
            assert saved.format == "PNG"
            assert saved.size == (prompt.width, prompt.height)
            assert np.array_equal(_pixels(saved.convert("RGB")), _pixels(preview.image))


def _read_a1111_parameters(path) -> dict[str, str]:
    """Parse a PNG's A1111 ``parameters`` chunk the way A1111's PNG Info does: prompt, negative, key: value pairs."""
    with Image.open(path) as saved:
        text = saved.text["parameters"]
    *head, settings = text.split("\n")
    fields = dict(pair.split(": ", 1) for pair in re.split(r", (?=[A-Z][\w ]*: )", settings))
    negative = [line for line in head if line.startswith("Negative prompt: ")]
    prompt_lines = [line for line in head if line not in negative]
    fields["prompt"] = "\n".join(prompt_lines)
    if negative:
        fields["negative"] = negative[0].removeprefix("Negative prompt: ")
    return fields


def test_previews_carry_a1111_parameters_read_back_with_pil(tmp_path, sd1_model):
    prompts = [
        _prompt("sks dog, in a garden", negative_prompt="blurry, lowres", width=128, height=64, steps=2,
                cfg_scale=6.5, seed=77, sampler="k_euler_a"),
        _prompt("a cat", steps=2, seed=3, sampler="dpmsolver++"),
    ]
    previews = render_samples(sd1_model, prompts, tmp_path, "run", step=4)

    first, second = (_read_a1111_parameters(preview.path) for preview in previews)
    assert first == {"prompt": "sks dog, in a garden", "negative": "blurry, lowres", "Steps": "2",
                     "Sampler": "Euler a", "CFG scale": "6.5", "Seed": "77", "Size": "128x64"}
    assert float(second.pop("CFG scale")) == prompts[1].cfg_scale
    assert second == {"prompt": "a cat", "Steps": "2", "Sampler": "DPM++ 2M", "Seed": "3", "Size": "64x64"}


def test_same_seed_same_pixels_and_different_seed_differs(sd1_model):
    prompts = [_prompt(seed=seed, sampler="euler_a") for seed in (3, 3, 4)]
    torch.manual_seed(100)
    first, again, other = (_pixels(image) for image in generate_images(sd1_model, prompts))
    torch.manual_seed(200)  # the global RNG must not matter, even for an ancestral sampler
    (later,) = (_pixels(image) for image in generate_images(sd1_model, prompts[:1]))
    assert np.array_equal(first, again)
    assert np.array_equal(first, later)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("sampler", ["ddim", "euler_a"])
def test_batched_rendering_draws_each_prompt_as_alone(sd1_model, sampler):
    prompts = [_prompt("a red ball", seed=3, sampler=sampler), _prompt("a blue cube", seed=4, sampler=sampler),
               _prompt("a red ball", seed=5, sampler=sampler, steps=2), _prompt("a tree", seed=6, sampler=sampler)]
    alone = [_pixels(image) for image in generate_images(sd1_model, prompts)]
    batched = [_pixels(image) for image in generate_images(sd1_model, prompts, batch_size=3)]
    for one, many in zip(alone, batched):
        assert np.abs(one - many).max() <= 2  # batched matrix products only move float rounding
    assert not np.array_equal(alone[0], alone[1])


def _draw_from_global_rngs(module, args) -> None:
    torch.rand(1)
    random.random()
    np.random.rand()


@pytest.mark.parametrize("module_draws", [False, True], ids=["plain", "module-draws-from-global-rng"])
def test_global_rng_states_are_restored(sd1_model, module_draws):
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    expected_draw = torch.rand(4)
    torch.set_rng_state(before[0])

    # The second case stands in for any module that draws random numbers in forward (a custom adapter, a hook).
    hook = sd1_model.unet.register_forward_pre_hook(_draw_from_global_rngs) if module_draws else None
    try:
        generate_images(sd1_model, [_prompt(sampler="euler_a"), _prompt(seed=2, sampler="dpm_2_a")])
    finally:
        if hook is not None:
            hook.remove()

    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    after_numpy = np.random.get_state()
    assert after_numpy[0] == before[2][0] and np.array_equal(after_numpy[1], before[2][1])
    assert torch.equal(torch.rand(4), expected_draw)


def test_modes_are_eval_during_sampling_and_restored_after(load_tiny):
    model = load_tiny("sd1")
    model.unet.train()
    model.unet.conv_in.eval()  # a sub-module the trainer keeps in eval must stay so
    model.text_encoders[0].train()
    model.vae.eval()
    for parameter in model.unet.parameters():
        parameter.requires_grad_(True)
    modes_before = {name: module.training for name, module in model.unet.named_modules()}

    seen: list[bool] = []
    hooks = [
        module.register_forward_pre_hook(lambda module, args: seen.append(module.training))
        for module in (model.unet, model.text_encoders[0], model.vae.decoder)
    ]
    generate_images(model, [_prompt()])
    for hook in hooks:
        hook.remove()

    assert seen and not any(seen)
    assert {name: module.training for name, module in model.unet.named_modules()} == modes_before
    assert model.text_encoders[0].training and not model.vae.training
    assert all(parameter.grad is None for parameter in model.unet.parameters())


def test_previews_use_live_lora_layers(load_tiny):
    model = load_tiny("sd1")
    base = _render_one(model)
    unet_targets = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    text_targets = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    inject_adapter_in_model(unet_targets, model.unet)
    inject_adapter_in_model(text_targets, model.text_encoders[0])

    assert np.array_equal(_render_one(model), base)  # lora_up starts at zero: no change yet

    lora_up = [p for name, p in model.unet.named_parameters() if "lora_B" in name]
    assert lora_up
    with torch.no_grad():
        for parameter in lora_up:
            parameter.normal_(std=0.5, generator=torch.Generator().manual_seed(0))
    trained = _render_one(model)
    assert not np.array_equal(trained, base)

    with torch.no_grad():  # an optimizer step on the same tensors shows up in the next preview
        for parameter in lora_up:
            parameter.mul_(-1.0)
    assert not np.array_equal(_render_one(model), trained)


def test_changed_unet_weight_changes_the_preview(load_tiny):
    model = load_tiny("sd1")
    before = _render_one(model)
    with torch.no_grad():
        model.unet.conv_out.bias.add_(0.5)
    assert not np.array_equal(_render_one(model), before)


def test_v_prediction_model_samples_as_v_prediction(load_tiny):
    model = load_tiny("sd2-v")
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    as_trained = _render_one(model, width=96)
    assert as_trained.shape == (64, 96, 3)
    as_epsilon = dataclasses.replace(
        model, noise_scheduler=DDPMScheduler(**{**model.noise_scheduler.config, "prediction_type": "epsilon"})
    )
    assert not np.array_equal(_render_one(as_epsilon, width=96), as_trained)


def test_sdxl_pipeline_renders_deterministically(tmp_path, load_tiny):
    model = load_tiny("sdxl")
    prompts = [_prompt("a lighthouse at dusk", width=96, height=64, seed=11)] * 2
    first, second = render_samples(model, prompts, tmp_path, "xl", step=0)
    assert first.path.name == "xl_000000_00_11.png" and second.path.name == "xl_000000_01_11.png"
    assert first.image.size == (96, 64)
    assert np.array_equal(_pixels(first.image), _pixels(second.image))
    assert np.asarray(first.image).std() > 0


def test_clip_skip_changes_the_conditioning(sd1_model):
    (last,) = generate_images(sd1_model, [_prompt()], clip_skip=1)
    (penultimate,) = generate_images(sd1_model, [_prompt()], clip_skip=2)
    assert not np.array_equal(_pixels(last), _pixels(penultimate))


def test_mixed_module_dtypes_render_on_cpu(load_tiny):
    model = load_tiny("sd1")
    model.unet.to(torch.bfloat16)
    model.text_encoders[0].to(torch.bfloat16)
    (image,) = generate_images(model, [_prompt()])
    assert image.size == (64, 64)
    assert next(model.unet.parameters()).dtype == torch.bfloat16
    assert next(model.vae.parameters()).dtype == torch.float32


def test_diffusers_step_bar_is_quiet(capfd, sd1_model):
    generate_images(sd1_model, [_prompt(steps=7)])
    assert "/7 [" not in capfd.readouterr().err


def test_no_prompts_renders_nothing(tmp_path, sd1_model):
    assert render_samples(sd1_model, [], tmp_path, "run", step=3) == []
    assert not (tmp_path / "sample").exists()
