"""A run's preview schedule renders its prompts with the section's settings, ``render_batch_size`` included."""

from __future__ import annotations

import pytest
import torch

from library.config import load_config
from library.models.loader import load_base_model
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
