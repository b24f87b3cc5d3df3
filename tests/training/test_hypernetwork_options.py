"""Which hypernetwork a run trains (``build_hypernetwork``): a pair per ``enable_sizes`` width or the text context's
alone, the continued file's shape, widths and steps, and one-line refusals for widths the model lacks and for shape options
that contradict the continued file."""

from __future__ import annotations

import pytest
import torch

from library.config import ConfigError, parse_cli
from library.models.families import get_family
from library.models.tiny import build_components, tiny_configs
from library.networks.hypernetwork import Hypernetwork, HypernetworkOptions, context_widths
from library.networks.hypernetwork_file import HypernetworkFileError, a1111_dict, write_pt
from library.training.exceptions import TrainingSetupError
from library.training.hypernetwork_weights import build_hypernetwork


@pytest.fixture(scope="module")
def unet():
    family = get_family("sd1")
    return build_components(family, tiny_configs(family), seed=0).unet


def _config(*flags: str):
    return parse_cli(["--pretrained_model_name_or_path", "model.safetensors", "--train_data_dir", "data",
                      *flags], program="train_hypernetwork.py")


def test_widths_default_to_the_text_context_and_follow_enable_sizes(unet):
    assert build_hypernetwork(_config(), unet)[0].widths == [unet.config.cross_attention_dim]
    widths = context_widths(unet)
    sizes = ", ".join(map(str, reversed(widths)))
    assert build_hypernetwork(_config("--hypernetwork.enable_sizes", sizes), unet)[0].widths == widths


def test_a_width_no_attention_layer_takes_is_refused(unet):
    with pytest.raises(TrainingSetupError) as refused:
        build_hypernetwork(_config("--hypernetwork.enable_sizes", "768, 12"), unet)
    message = str(refused.value)
    assert message.startswith("hypernetwork.enable_sizes names width(s) ") and "\n" not in message
    for bad in ("1, 1", "0"):
        with pytest.raises(ConfigError, match="hypernetwork.enable_sizes"):
            _config("--hypernetwork.enable_sizes", bad)


def test_a_continued_file_brings_its_shape_and_contradicting_options_are_refused(unet, tmp_path):
    options = HypernetworkOptions(layer_structure=(1.0, 1.5, 1.0), activation_func="tanh")
    saved = Hypernetwork(context_widths(unet), options)
    path = tmp_path / "old.pt"
    write_pt(path, a1111_dict(saved, {"step": 9}, torch.float32))
    continued, steps_before = build_hypernetwork(_config("--hypernetwork.network_weights", str(path),
                                                         "--hypernetwork.activation_func", "tanh"), unet)
    assert continued.options == options and continued.widths == saved.widths and steps_before == 9
    assert all(torch.equal(a, b) for a, b in zip(continued.state_dict().values(), saved.state_dict().values()))
    with pytest.raises(TrainingSetupError) as refused:
        build_hypernetwork(_config("--hypernetwork.network_weights", str(path), "--hypernetwork.layer_structure",
                                   "1, 2, 1", "--hypernetwork.enable_sizes", "32"), unet)
    message = str(refused.value)
    assert message.startswith(f"hypernetwork.network_weights: {path} was made with enable_sizes = ")
    assert "layer_structure = (1.0, 1.5, 1.0)" in message and "\n" not in message


def test_a_new_hypernetwork_and_a_file_without_a_step_start_at_0_and_a_bad_step_is_refused(unet, tmp_path):
    assert build_hypernetwork(_config(), unet)[1] == 0
    saved = Hypernetwork([unet.config.cross_attention_dim], HypernetworkOptions())
    path = tmp_path / "stepless.pt"
    write_pt(path, a1111_dict(saved, {}, torch.float32))  # A1111 reads a file without 'step' as 0 steps
    assert build_hypernetwork(_config("--hypernetwork.network_weights", str(path)), unet)[1] == 0
    write_pt(path, a1111_dict(saved, {"step": "9"}, torch.float32))
    with pytest.raises(HypernetworkFileError) as refused:
        build_hypernetwork(_config("--hypernetwork.network_weights", str(path)), unet)
    assert str(refused.value) == f"{path}: its step entry '9' is not a step count; fix or remove it"
