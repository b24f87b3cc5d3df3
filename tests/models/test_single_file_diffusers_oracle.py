"""diffusers' own single-file readers, run on the files we write, give back exactly our modules' weights."""

from __future__ import annotations

import diffusers
import pytest
import torch
from diffusers.loaders import single_file_utils as ldm

from library.models.families import get_family
from library.models.single_file import diffusers_to_original, save_original_checkpoint
from library.models.single_file.components import component_layouts
from library.models.tiny import (
    build_components,
    build_pipeline,
    component_state_dicts,
    tiny_configs,
)


def _assert_same_tensors(expected: dict, actual: dict) -> None:
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


def _diffusers_reading(layout, original: dict, config: dict, module: torch.nn.Module) -> dict:
    """What diffusers' converter for this component makes of ``original``."""
    if layout.kind == "unet":
        return ldm.convert_ldm_unet_checkpoint(original, config)
    if layout.kind == "vae":
        return ldm.convert_ldm_vae_checkpoint(original, config)
    if layout.kind == "clip":
        converted = ldm.convert_ldm_clip_checkpoint(original)
    else:
        converted = ldm.convert_open_clip_checkpoint(module, original, prefix=layout.prefix)
    if layout.model_class == "CLIPTextModel":  # transformers 5 flattened this class
        converted = {key.removeprefix("text_model."): value for key, value in converted.items()}
    return converted


@pytest.mark.parametrize("family", ["sd1", "sd2", "sd2-v", "sdxl"])
def test_diffusers_converters_agree(family):
    model_family = get_family(family)
    configs = tiny_configs(model_family)
    components = build_components(model_family, configs, seed=3)
    state_dicts = component_state_dicts(model_family, components)
    modules = dict(zip([spec.component for spec in model_family.text_encoders], components.text_encoders))
    original = diffusers_to_original(family, state_dicts, configs)

    for layout in component_layouts(family):
        converted = _diffusers_reading(layout, original, configs[layout.name], modules.get(layout.name))
        expected = state_dicts[layout.name]
        if layout.kind == "open_clip" and layout.model_class == "CLIPTextModel":
            # diffusers skips SD2's unused last tower block by its full-size index (23); a tiny tower's is lower.
            layers = configs[layout.name]["num_hidden_layers"]
            last, unused = f"encoder.layers.{layers - 1}.", f"encoder.layers.{layers}."
            assert {key for key in converted if key.startswith(unused)} == {
                key.replace(last, unused) for key in expected if key.startswith(last)
            }
            converted = {key: value for key, value in converted.items() if not key.startswith(unused)}
        _assert_same_tensors(expected, converted)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_from_single_file_loads_our_file(family, tmp_path):
    model_family = get_family(family)
    configs = tiny_configs(model_family)  # the tiny SDXL's encoders differ in width, as diffusers needs
    components = build_components(model_family, configs, seed=5)
    state_dicts = component_state_dicts(model_family, components)
    build_pipeline(model_family, components).save_pretrained(tmp_path / "diffusers")
    save_original_checkpoint(tmp_path / "model.safetensors", family, state_dicts, configs)

    pipeline_class = getattr(diffusers, model_family.pipeline_class)
    pipeline = pipeline_class.from_single_file(
        str(tmp_path / "model.safetensors"), config=str(tmp_path / "diffusers"), local_files_only=True
    )
    for name, state_dict in state_dicts.items():
        _assert_same_tensors(state_dict, getattr(pipeline, name).state_dict())
