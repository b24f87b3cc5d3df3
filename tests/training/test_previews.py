"""A run's preview schedule renders its prompts (a prompt file or the lines of ``sample.prompt_text``) with the
section's settings, ``render_batch_size`` included."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from library.config import load_config
from library.models.loader import load_base_model
from library.sampling.infotext import read_a1111_parameters
from library.training.accelerator import Precision
from library.training.previews import PreviewSchedule


@pytest.mark.parametrize(("render_batch_size", "unet_calls"), [(1, 6), (3, 2)])
def test_previews_render_as_many_prompts_per_pass_as_configured(tiny_sd1, tmp_path, render_batch_size, unet_calls):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball --d 1\na blue cube --d 2\na green tree --d 3\n", encoding="utf-8")
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        f'[model]\npretrained_model_name_or_path = "{tiny_sd1.folder}"\n'
        f'[dataset]\ntrain_data_dir = "{tmp_path}"\nresolution = 64\n'
        f'[sample]\nprompts = "{prompts}"\nsteps = 2\nrender_batch_size = {render_batch_size}\n',
        encoding="utf-8",
    )
    model = load_base_model(tiny_sd1.folder)
    schedule = PreviewSchedule(load_config(config_file), model, tmp_path / "out", Precision("no", torch.float32))
    calls = []
    model.unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    previews = schedule.render(step=5)
    assert [preview.path.name for preview in previews] == [
        f"{schedule.output_name}_000005_{index:02d}_{seed}.png" for index, seed in enumerate((1, 2, 3))
    ]
    assert len(calls) == unet_calls  # 2 denoising steps per pass; the guidance pair goes in one call
    assert set(calls) == {2 * render_batch_size}


def test_previews_render_the_prompt_lines_written_in_the_config(tiny_sd1, tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        f'[model]\npretrained_model_name_or_path = "{tiny_sd1.folder}"\n'
        f'[dataset]\ntrain_data_dir = "{tmp_path}"\nresolution = 64\n[training]\nseed = 9\n'
        '[sample]\nsteps = 2\nprompt_text = """\n# the editor\'s lines\na red ball --n blurry --d 4\n'
        'a blue cube --w 72 --s 1\n"""\n',
        encoding="utf-8",
    )
    schedule = PreviewSchedule(load_config(config_file), load_base_model(tiny_sd1.folder), tmp_path / "out",
                               Precision("no", torch.float32))
    previews = schedule.render(step=3)
    written = []
    for preview in previews:
        with Image.open(preview.path) as image:
            written.append((preview.path.name, image.size, read_a1111_parameters(image.info["parameters"])))
    name = schedule.output_name
    assert [(file, size) for file, size, _ in written] == [(f"{name}_000003_00_4.png", (64, 64)),
                                                          (f"{name}_000003_01_9.png", (72, 64))]
    first, second = (parameters for _, _, parameters in written)
    assert (first["prompt"], first["negative_prompt"], first["Steps"]) == ("a red ball", "blurry", "2")
    assert (second["prompt"], second["Steps"], second["Seed"]) == ("a blue cube", "1", "9")
