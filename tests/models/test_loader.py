"""Base-model loading: every family through both layouts, safe .ckpt reading, and the error messages."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from library.models.errors import ModelLoadError
from library.models.loader import load_base_model

FAMILIES = ["sd1", "sd2", "sd2-v", "sdxl"]


def _component_state_dicts(model) -> dict[str, dict[str, torch.Tensor]]:
    parts = {"unet": model.unet, "vae": model.vae}
    for spec, encoder in zip(model.family.text_encoders, model.text_encoders):
        parts[spec.component] = encoder
    return {name: module.state_dict() for name, module in parts.items()}


def _assert_same_weights(left, right) -> None:
    left_parts, right_parts = _component_state_dicts(left), _component_state_dicts(right)
    assert left_parts.keys() == right_parts.keys()
    for name in left_parts:
        assert left_parts[name].keys() == right_parts[name].keys(), name
        for key, tensor in left_parts[name].items():
            assert torch.equal(tensor, right_parts[name][key]), f"{name}.{key} differs"


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_and_single_file_load_identical_weights(tiny_model_factory, family):
    tiny = tiny_model_factory(family)
    from_folder = load_base_model(tiny.folder)
    from_file = load_base_model(tiny.single_file)
    assert from_folder.family.name == family
    assert from_file.family.name == family
    assert from_folder.source_format == "diffusers"
    assert from_file.source_format == "safetensors"
    _assert_same_weights(from_folder, from_file)
    assert from_file.noise_scheduler.config.prediction_type == from_file.family.prediction_type
    assert [t.pad_token for t in from_file.tokenizers] == [t.pad_token for t in from_folder.tokenizers]


def test_ckpt_with_plain_tensors_loads(tiny_sd1, tmp_path):
    state_dict = load_file(tiny_sd1.single_file)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": state_dict, "global_step": 10}, ckpt)
    from_ckpt = load_base_model(ckpt)
    assert from_ckpt.source_format == "ckpt"
    _assert_same_weights(from_ckpt, load_base_model(tiny_sd1.single_file))


class _CreatesFileWhenUnpickled:
    """A pickle payload whose reduce creates a file: what a malicious .ckpt would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_ckpt_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned.txt"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _CreatesFileWhenUnpickled(marker)}, ckpt)
    with pytest.raises(ModelLoadError) as error:
        load_base_model(ckpt)
    message = str(error.value)
    assert str(ckpt) in message
    assert "refused" in message and ".safetensors" in message
    assert not marker.exists()


def test_missing_path_names_what_was_looked_for(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        load_base_model(tmp_path / "nope.safetensors")
    message = str(error.value)
    assert "nope.safetensors" in message
    assert "diffusers folder" in message and ".ckpt" in message


def test_hub_id_gets_offline_hint():
    with pytest.raises(ModelLoadError, match="never downloads"):
        load_base_model("runwayml/stable-diffusion-v1-5")


def test_folder_without_model_index_lists_contents(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError) as error:
        load_base_model(tmp_path)
    assert "model_index.json" in str(error.value) and "notes.txt" in str(error.value)


def test_folder_missing_a_component(tiny_sd1, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd1.folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelLoadError, match=r"vae.*missing"):
        load_base_model(broken)


def test_lora_file_is_not_a_base_model(tmp_path):
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 8)}, lora)
    with pytest.raises(ModelLoadError, match="LoRA"):
        load_base_model(lora)


def test_truncated_safetensors_is_reported(tiny_sd1, tmp_path):
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(tiny_sd1.single_file.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="cut.safetensors"):
        load_base_model(truncated)


def test_sd2_prediction_type_hints(tiny_model_factory, tmp_path):
    v_file = tiny_model_factory("sd2-v").single_file
    assert load_base_model(v_file).family.name == "sd2-v"
    # Without metadata an SD2 file is epsilon, unless an A1111-style yaml beside it says v.
    bare = tmp_path / "sd2_768.safetensors"
    save_file(load_file(v_file), bare)
    assert load_base_model(bare).family.name == "sd2"
    bare.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert load_base_model(bare).family.name == "sd2-v"
    assert load_base_model(bare, family="sd2").family.name == "sd2"


def test_diffusers_folder_detection_reads_scheduler(tiny_model_factory):
    folder = tiny_model_factory("sd2-v").folder
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"
    model = load_base_model(folder)
    assert model.family.is_v_prediction
    assert model.noise_scheduler.config.prediction_type == "v_prediction"


def test_summary_names_family_and_sizes(tiny_sd1):
    lines = load_base_model(tiny_sd1.folder).summary_lines()
    text = "\n".join(lines)
    assert "sd1" in text and "unet:" in text and "parameters" in text and "0.18215" in text


def _other_vae_state(tmp_path):
    """A tiny sd1 VAE with different weights (seed 7) saved in the A1111 stand-alone layout and as a folder."""
    from library.models.families import get_family
    from library.models.single_file import diffusers_to_original
    from library.models.tiny import build_components, component_state_dicts, tiny_configs

    family = get_family("sd1")
    configs = tiny_configs(family)
    components = build_components(family, configs, seed=7)
    original = diffusers_to_original("sd1", component_state_dicts(family, components), configs)
    vae_only = {
        key.removeprefix("first_stage_model."): value
        for key, value in original.items()
        if key.startswith("first_stage_model.")
    }
    vae_file = tmp_path / "other.vae.safetensors"
    save_file(vae_only, vae_file)
    components.vae.save_pretrained(tmp_path / "other_vae")
    return components.vae.state_dict(), vae_file, tmp_path / "other_vae"


def test_separate_vae_replaces_the_models_own(tiny_sd1, tmp_path):
    expected, vae_file, vae_folder = _other_vae_state(tmp_path)
    for source in (vae_file, vae_folder):
        model = load_base_model(tiny_sd1.folder, vae=source)
        loaded = model.vae.state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[key], expected[key]) for key in expected), source
    with pytest.raises(ModelLoadError, match="model.vae"):
        load_base_model(tiny_sd1.folder, vae=tmp_path / "missing.safetensors")
