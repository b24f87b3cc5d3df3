"""train_network.py end to end on tiny models: files, keys, metadata, samples, TensorBoard, progress events."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from library.config import load_config
from library.networks import verify_hashes

from trainer_cli import base_args, read_events, run_cli

pytestmark = pytest.mark.slow  # these tests start processes or trainers


@pytest.fixture(scope="module")
def sd1_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """One 8-step run with previews, intermediate saves and pruning."""
    output = tmp_path_factory.mktemp("run-sd1")
    prompts = output.parent / "prompts.txt"
    prompts.write_text("# previews\nfrnc, red circle --w 64 --h 64 --s 2 --d 5\nfrnc --n blurry --s 2 --d 6\n")
    args = base_args(
        tiny_model_factory("sd1").folder,
        concept_dataset,
        output,
        sample_prompts=prompts,
        sample_every_n_steps=4,
        save_every_n_steps=2,
    )
    result = run_cli("train_network.py", [*args, "--output.save_last_n", "1", "--logging.log_every_n_steps", "1"])
    return output, result


def test_writes_kohya_lora_with_metadata(sd1_run):
    output, _ = sd1_run
    final = output / "lora.safetensors"
    with safe_open(str(final), framework="pt") as handle:
        keys = set(handle.keys())
        metadata = handle.metadata()
    unet_modules = {k.split(".")[0] for k in keys if k.startswith("lora_unet_")}
    te_modules = {k.split(".")[0] for k in keys if k.startswith("lora_te_")}
    assert unet_modules and te_modules
    assert all(name.startswith("lora_te_text_model_encoder_layers_") for name in te_modules)
    for module in unet_modules | te_modules:
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= keys
    assert metadata["ss_network_dim"] == "4"
    assert metadata["ss_network_alpha"] == "2.0"
    assert metadata["ss_steps"] == "8"
    assert metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert json.loads(metadata["ss_dataset_dirs"])
    assert json.loads(metadata["ss_tag_frequency"])
    assert verify_hashes(final)


def test_intermediate_files_are_pruned_and_config_saved(sd1_run):
    output, _ = sd1_run
    intermediate = sorted(p.name for p in output.glob("lora-step*.safetensors"))
    assert intermediate == ["lora-step00000006.safetensors"]
    assert not list(output.glob("*.tmp"))
    resolved = load_config(output / "config.toml")
    assert resolved.training.max_train_steps == 8
    assert resolved.network.dim == 4


def test_progress_events_and_samples(sd1_run):
    output, result = sd1_run
    events = read_events(output)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    setup = events[0]["setup_seconds"]  # where the time before the first step went
    assert {"model load", "dataset scan", "latents", "optimizer", "text-encoder outputs"} <= setup.keys()
    assert all(seconds >= 0 for seconds in setup.values())
    assert sum(setup.values()) > 0 and "INFO set-up: model load" in result.stderr
    checkpoints = [event for event in events if event["event"] == "checkpoint"]
    assert checkpoints and all(event["seconds"] >= 0 for event in checkpoints)
    steps = [event["step"] for event in events if event["event"] == "step"]
    assert steps == list(range(1, 9))
    step_event = next(event for event in events if event["event"] == "step")
    assert {"loss", "smoothed_loss", "lr", "epoch", "eta_seconds"} <= step_event.keys()
    samples = [event for event in events if event["event"] == "sample"]
    # Each due step renders its two prompts once: the last step's previews are not rendered again at the end.
    assert sorted(event["step"] for event in samples) == [4, 4, 8, 8]
    assert len({event["file"] for event in samples}) == 4
    for event in samples:
        assert (output / "sample").joinpath(event["file"].rsplit("/", 1)[-1]).is_file()


def test_tensorboard_has_loss_lr_and_images(sd1_run):
    output, _ = sd1_run
    event_files = list((output / "logs").rglob("events.out.tfevents.*"))
    assert event_files
    accumulator = EventAccumulator(str(event_files[0].parent), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    assert "loss/current" in tags["scalars"] and "loss/average" in tags["scalars"]
    assert any(tag.startswith("lr/") for tag in tags["scalars"])
    assert len(accumulator.Scalars("loss/current")) == 8
    assert tags["images"], "sample previews are logged as images"
