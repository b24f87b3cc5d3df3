"""FLUX.1 previews: rendered through FluxPipeline around the live modules with our own conditioning (T5 sequence,
CLIP-L pooled), they equal what FluxPipeline draws encoding the same prompt itself; ``--g`` feeds dev's guidance
input and ``--n`` with ``--l`` runs FluxPipeline's true CFG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline

from library.models.loader import load_base_model
from library.sampling.preview import generate_images
from library.sampling.prompts import SamplePrompt, parse_prompt_lines

DEFAULTS = SamplePrompt(prompt="", width=64, height=64, steps=2, seed=5, sampler="ddim")


@pytest.fixture(scope="module", params=["flux1-dev", "flux1-schnell"])
def flux(request, tiny_model_factory):
    folder = tiny_model_factory(request.param).folder
    return load_base_model(folder), FluxPipeline.from_pretrained(folder, local_files_only=True)


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def _diffusers(pipeline: FluxPipeline, model, **options) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    with torch.no_grad():
        images = pipeline(
            width=64, height=64, num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(5),
            max_sequence_length=model.family.text_encoders[1].max_length, output_type="pil", **options,
        ).images
    return _pixels(images)


def test_preview_equals_flux_pipeline_encoding_the_prompt_itself(flux):
    model, pipeline = flux
    ours = _pixels(generate_images(model, parse_prompt_lines("frnc, red circle --g 4.0", DEFAULTS)))
    theirs = _diffusers(pipeline, model, prompt="frnc, red circle", guidance_scale=4.0)
    assert ours.std() > 0 and np.abs(ours - theirs).max() <= 1


def test_negative_prompt_runs_true_cfg_as_flux_pipeline_does(flux):
    model, pipeline = flux
    line = "frnc, red circle --n blurry --l 3.0 --g 4.0"
    ours = _pixels(generate_images(model, parse_prompt_lines(line, DEFAULTS)))
    theirs = _diffusers(pipeline, model, prompt="frnc, red circle", negative_prompt="blurry", true_cfg_scale=3.0,
                        guidance_scale=4.0)
    assert np.abs(ours - theirs).max() <= 1
    plain = _pixels(generate_images(model, parse_prompt_lines("frnc, red circle --l 3.0 --g 4.0", DEFAULTS)))
    assert np.abs(ours - plain).max() > 0


def test_guidance_option_reaches_only_a_guidance_distilled_transformer(flux):
    model, _ = flux
    low, high = (_pixels(generate_images(model, parse_prompt_lines(f"frnc --g {g}", DEFAULTS))) for g in (1.0, 8.0))
    assert (np.abs(low - high).max() > 0) == model.family.guidance_embedded


@pytest.mark.parametrize("sampler_key", ["", 'sampler = "euler_a"\n'], ids=["default", "sample.sampler"])
def test_a_sampler_flux_previews_do_not_use_is_named_in_one_warning(tiny_model_factory, tmp_path, caplog,
                                                                   sampler_key):
    from library.config import loads_config
    from library.training.accelerator import choose_precision
    from library.training.previews import PreviewSchedule

    folder = tiny_model_factory("flux1-dev").folder
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# previews\nfrnc, red circle --ss dpmsolver++\nfrnc --ss euler\na blue square\n", encoding="utf-8")
    config = loads_config(f'[model]\npretrained_model_name_or_path = "{folder}"\n[dataset]\ntrain_data_dir = '
                          f'"{tmp_path}"\n[sample]\nprompts = "{prompts}"\n{sampler_key}')
    model = load_base_model(folder)
    with caplog.at_level("WARNING", logger="library.sampling.preview"):
        schedule = PreviewSchedule(config, model, tmp_path, choose_precision(config, cuda_available=False))
    why = "which is not used: FLUX.1 [dev] previews use the flow-matching Euler sampler"
    expected = [f"{prompts}: the prompt line 'frnc, red circle' asks for --ss dpmsolver++, {why}"]
    if sampler_key:
        expected.insert(0, "sample.sampler 'euler_a' is not used: FLUX.1 [dev] previews use the flow-matching Euler "
                           "sampler")
    assert [record.getMessage() for record in caplog.records] == expected
    assert len(schedule.prompts) == 3


def test_a_size_off_the_16px_multiple_is_rendered_fitted_and_its_file_says_so(flux, tmp_path, caplog):
    """FluxPipeline would shrink a 72 px side to 64 on its own; the preview settings, file and log follow it."""
    from PIL import Image

    from library.sampling.preview import render_samples, warn_unused_settings

    model, _ = flux
    prompts = parse_prompt_lines("frnc --w 72 --h 88", DEFAULTS)
    with caplog.at_level("WARNING", logger="library.sampling.preview"):
        warn_unused_settings(model.family, prompts, "prompts.txt", DEFAULTS.sampler, False)
    assert [record.getMessage() for record in caplog.records] == [
        f"prompts.txt: the prompt line 'frnc' asks for 72x88, rendered at 64x80: {model.family.title} sides are "
        "multiples of 16 px"]
    (preview,) = render_samples(model, prompts, tmp_path, "lora", 1)
    assert preview.image.size == (64, 80) and (preview.prompt.width, preview.prompt.height) == (64, 80)
    with Image.open(preview.path) as image:
        assert "Size: 64x80" in image.info["parameters"]
