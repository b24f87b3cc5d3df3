"""train_network.py on tiny FLUX.1-dev and FLUX.1-schnell models from configs/flux1_quickstart.toml: the LoRA
trains (its up weights move, the loss stays finite), previews render with the live weights, TensorBoard holds the
scalars and previews, and a resumed run ends with the same tensors as an uninterrupted one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer_cli import REPO, read_events, run_cli

pytestmark = pytest.mark.slow  # these tests start trainers

STEPS = 4


def _args(model, dataset, output, *extra: str) -> list[str]:
    """The quickstart config, pointed at a tiny model, a dataset and an output folder, cut to a few steps."""
    return [
        "--config", str(REPO / "configs" / "flux1_quickstart.toml"),
        "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(dataset),
        "--output_dir", str(output), "--output_name", "lora", "--max_train_steps", str(STEPS),
        "--save_every_n_steps", "2", "--save_precision", "float", "--logging.log_every_n_steps", "1", *extra,
    ]


@pytest.fixture(scope="module")
def dev_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    model = tiny_model_factory("flux1-dev").folder
    output = tmp_path_factory.mktemp("flux-dev")
    prompts = output.parent / "flux-prompts.txt"
    prompts.write_text("frnc, red circle --w 64 --h 64 --s 2 --d 5 --g 3.5\nfrnc --n blurry --l 2 --s 2 --d 6\n")
    run_cli("train_network.py", _args(model, concept_dataset, output, "--sample_prompts", str(prompts),
                                      "--sample_every_n_steps", "2"))
    return model, output


@pytest.fixture(scope="module")
def schnell_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """schnell with CLIP-L adapters (text encoders train, so nothing is cached) and sd-scripts' default objective
    (sigma sampling, sigma_scaled prediction) with a loss weighting."""
    output = tmp_path_factory.mktemp("flux-schnell")
    run_cli("train_network.py", _args(
        tiny_model_factory("flux1-schnell").folder, concept_dataset, output,
        "--network.train_unet_only", "false", "--dataset.cache_text_encoder_outputs", "false",
        "--timestep_sampling", "sigma", "--model_prediction_type", "sigma_scaled", "--weighting_scheme", "cosmap",
    ))
    return output


def _modules(path, prefix: str) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return {key.split(".")[0] for key in handle.keys() if key.startswith(prefix)}


def _check_trained(output, architecture: str) -> dict[str, torch.Tensor]:
    tensors = load_file(output / "lora.safetensors")
    ups = {key: tensor for key, tensor in tensors.items() if key.endswith(".lora_up.weight")}
    assert ups and all(tensor.abs().sum() > 0 for tensor in ups.values())  # peft starts every up matrix at zero
    with safe_open(str(output / "lora.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["modelspec.architecture"] == architecture
    assert metadata["ss_base_model_version"] == "flux1"
    losses = [event["loss"] for event in read_events(output) if event["event"] == "step"]
    assert len(losses) == STEPS and all(math.isfinite(loss) for loss in losses)
    return tensors


def test_flux1_dev_lora_trains_the_transformer_blocks(dev_run):
    _, output = dev_run
    _check_trained(output, "flux-1-dev/lora")
    unet = _modules(output / "lora.safetensors", "lora_unet_")
    # The kohya/BFL layout: the tiny transformer's double block as its ten BFL modules (q, k, v fused per stream)
    # and each of its two single blocks as three (q, k, v and the MLP input fused into linear1)
    double = {f"lora_unet_double_blocks_0_{stream}_{part}" for stream in ("img", "txt")
              for part in ("attn_qkv", "attn_proj", "mlp_0", "mlp_2", "mod_lin")}
    single = {f"lora_unet_single_blocks_{index}_{part}" for index in range(2)
              for part in ("linear1", "linear2", "modulation_lin")}
    assert unet == double | single
    assert not _modules(output / "lora.safetensors", "lora_te")  # train_unet_only in the quickstart
    assert (output / "lora-step00000002.safetensors").is_file()


def test_flux1_schnell_lora_trains_clip_l_adapters_but_never_t5(schnell_run):
    _check_trained(schnell_run, "flux-1-schnell/lora")
    assert _modules(schnell_run / "lora.safetensors", "lora_unet_")
    assert _modules(schnell_run / "lora.safetensors", "lora_te1_text_model_encoder_layers_")
    assert not _modules(schnell_run / "lora.safetensors", "lora_te3_")


def test_previews_are_rendered_with_the_live_weights(dev_run):
    """Previews at steps 2 and 4 from the same seeds: the LoRA trained in between changed them."""
    _, output = dev_run
    events = [event for event in read_events(output) if event["event"] == "sample"]
    assert [event["step"] for event in events] == [2, 2, 4, 4]
    first, last = (Image.open(events[index]["file"]) for index in (0, 2))
    assert first.size == (64, 64) and "Sampler: Euler" in first.info["parameters"]
    assert np.asarray(first).tolist() != np.asarray(last).tolist()


def test_tensorboard_scalars_and_previews_read_back(dev_run):
    _, output = dev_run
    event_files = list((output / "logs").rglob("events.out.tfevents.*"))
    assert event_files
    accumulator = EventAccumulator(str(event_files[0].parent), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    assert any(tag.startswith("sample/") for tag in accumulator.Tags()["images"])
    steps = [event.step for event in accumulator.Scalars("loss/current")]
    assert steps == list(range(1, STEPS + 1))
    assert all(math.isfinite(event.value) for event in accumulator.Scalars("loss/average"))


def test_resume_is_exact(dev_run, concept_dataset, tmp_path):
    model, reference = dev_run
    args = _args(model, concept_dataset, tmp_path)
    run_cli("train_network.py", [*args, "--max_train_steps", "2", "--save_state_on_train_end", "true"])
    run_cli("train_network.py", [*args, "--resume", str(tmp_path / "state")])
    expected, resumed = load_file(reference / "lora.safetensors"), load_file(tmp_path / "lora.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


def _velocity(model) -> torch.Tensor:
    """The transformer's output on fixed inputs, called as training calls it."""
    from library.models.text_encoding import TextConditioning
    from library.training.flow_step import flux_prediction

    generator = torch.Generator().manual_seed(0)
    config = model.unet.config
    noisy = torch.randn(1, 16, 8, 8, generator=generator)
    conditioning = TextConditioning(torch.randn(1, 6, config.joint_attention_dim, generator=generator),
                                    torch.randn(1, config.pooled_projection_dim, generator=generator))
    with torch.no_grad():
        return flux_prediction(model.unet, model.family, noisy, torch.tensor([0.6]), conditioning, 3.5)


def test_merging_the_saved_file_equals_loading_it_into_live_adapters(dev_run):
    from library.models.loader import load_base_model
    from library.networks import LoraOptions, merge_lora_into
    from library.networks.network import inject_lora

    model_dir, output = dev_run
    base = _velocity(load_base_model(model_dir))
    live = load_base_model(model_dir)
    inject_lora(live.family, live.unet, live.text_encoders, LoraOptions(dim=4, alpha=4.0, train_unet_only=True)) \
        .load_file(output / "lora.safetensors")
    merged = load_base_model(model_dir)
    assert merge_lora_into(merged.family, merged.unet, merged.text_encoders,
                           load_file(output / "lora.safetensors")) == 26
    with_adapters, with_merge = _velocity(live), _velocity(merged)
    assert not torch.allclose(with_adapters, base)
    assert torch.allclose(with_adapters, with_merge, atol=1e-5)
