"""A LoRA run keeping an EMA (``network.ema_*``), end to end: the EMA files are the average of the raw files the same
run saved, their metadata says so, previews show the weights ``sample.use_ema`` asks for, and a resumed run ends
with the same files as an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from trainer_cli import base_args, read_events, run_cli

pytestmark = pytest.mark.slow  # these tests start trainers

STEPS, DECAY, EVERY = 6, 0.5, 2
EMA_FLAGS = ["--network.ema_decay", str(DECAY), "--network.ema_update_every", str(EVERY),
             "--network.ema_warmup", "false", "--network.ema_save", "both", "--save_every_n_steps", "1", "--save_state_on_train_end", "true",
             "--compare_at_end", "true", "--compare_strengths", "[1]", "--sample.steps", "2"]


def _args(tiny_model_factory, dataset, output, prompts, steps: int = STEPS) -> list[str]:
    return [*base_args(tiny_model_factory("sd1").folder, dataset, output, max_train_steps=steps, learning_rate=1e-2,
                       sample_prompts=prompts), *EMA_FLAGS]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("frnc --d 5\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ema_run(tiny_model_factory, concept_dataset, prompts, tmp_path_factory):
    """Six steps, the EMA updated every second step without warm-up, both EMA and raw files saved at every step,
    previews (from the EMA: what the run's own files hold) and the compare grid at the end."""
    output = tmp_path_factory.mktemp("ema") / "out"
    run_cli("train_network.py", _args(tiny_model_factory, concept_dataset, output, prompts))
    return output


@pytest.fixture(scope="module")
def raw_previews_run(tiny_model_factory, concept_dataset, prompts, tmp_path_factory):
    """The same run with ``sample.use_ema = false``."""
    output = tmp_path_factory.mktemp("raw-previews") / "out"
    run_cli("train_network.py", [*_args(tiny_model_factory, concept_dataset, output, prompts),
                                 "--sample.use_ema", "false"])
    return output


def _file(output, name: str, step: int):
    return output / (f"{name}.safetensors" if step == STEPS else f"{name}-step{step:08d}.safetensors")


def _tensors(output, name: str, step: int) -> dict[str, torch.Tensor]:
    return load_file(_file(output, name, step))


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def _assert_equal(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor], label: str) -> None:
    assert left.keys() == right.keys(), label
    different = [key for key in left if not torch.equal(left[key], right[key])]
    assert not different, f"{label}: {len(different)} tensors differ, e.g. {different[:2]}"


def test_the_ema_files_are_the_average_of_the_raw_files(ema_run):
    """Recomputed here from the raw weights saved after every step: without warm-up the average starts at the
    initial adapters (what the EMA file of step 1, before the first update, holds) and moves halfway towards the
    weights at steps 2, 4 and 6."""
    raw = {step: _tensors(ema_run, "lora-raw", step) for step in range(1, STEPS + 1)}
    ema = {step: _tensors(ema_run, "lora", step) for step in range(1, STEPS + 1)}
    ups = [key for key in ema[1] if key.endswith("lora_up.weight")]
    assert ups and all(not ema[1][key].any() for key in ups), "initial LoRA up matrices are zero"
    assert any(raw[1][key].any() for key in ups)
    average = {key: tensor.double() for key, tensor in ema[1].items()}
    for step in range(2, STEPS + 1):
        if step % EVERY == 0:
            average = {key: DECAY * average[key] + (1 - DECAY) * raw[step][key].double() for key in average}
        assert ema[step].keys() == average.keys()
        for key, tensor in ema[step].items():
            torch.testing.assert_close(tensor.double(), average[key], rtol=1e-5, atol=1e-7, msg=f"{step} {key}")
    _assert_equal(ema[3], ema[2], "no update at an odd step")
    assert any(not torch.equal(ema[STEPS][key], raw[STEPS][key]) for key in ups), "the EMA file holds the raw weights"


def test_the_files_record_the_ema_and_which_weights_they_hold(ema_run):
    for name, weights in (("lora", "ema"), ("lora-raw", "raw")):
        for step in (3, STEPS):
            metadata = _metadata(_file(ema_run, name, step))
            assert (metadata["ss_ema_decay"], metadata["ss_ema_update_every"], metadata["ss_ema_warmup"]) == (
                str(DECAY), str(EVERY), "False")
            assert (metadata["ss_weights"], metadata["ss_steps"], metadata["ss_output_name"]) == (
                weights, str(step), "lora")
    manifest = json.loads((ema_run / "state" / "manifest.json").read_text(encoding="utf-8"))
    assert "ema.safetensors" in manifest["files"] and manifest["saved_for"]["ema"] is True


def _image(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_previews_show_the_ema_or_the_raw_weights_as_asked(ema_run, raw_previews_run):
    """Each run's final preview is the picture its compare grid renders from the saved file of the weights it
    shows (EMA by default, raw with sample.use_ema = false); the two differ, and rendering the EMA left the
    training untouched: both runs saved the same files."""
    preview = f"sample/lora_{STEPS:06d}_00_5.png"
    for output, shown in ((ema_run, "lora"), (raw_previews_run, "lora-raw")):
        grid = sorted(path.name for path in (output / "compare" / "singles").glob("*.png"))
        assert grid == sorted(f"{_file(output, shown, step).stem}_s1_p00_5.png" for step in range(1, STEPS + 1))
        single = output / "compare" / "singles" / f"{shown}_s1_p00_5.png"
        assert np.abs(_image(output / preview) - _image(single)).max() <= 1, shown
    assert np.abs(_image(ema_run / preview) - _image(raw_previews_run / preview)).mean() > 0.5
    for name in ("lora", "lora-raw"):
        for step in range(1, STEPS + 1):
            _assert_equal(_tensors(ema_run, name, step), _tensors(raw_previews_run, name, step), f"{name} {step}")


def test_a_resumed_run_ends_with_the_files_of_an_uninterrupted_one(ema_run, tiny_model_factory, concept_dataset,
                                                                 prompts, tmp_path):
    """Stopped after step 3 (between two EMA updates) with its state, then resumed to step 6."""
    output = tmp_path / "out"
    run_cli("train_network.py", _args(tiny_model_factory, concept_dataset, output, prompts, steps=3))
    run_cli("train_network.py", [*_args(tiny_model_factory, concept_dataset, output, prompts), "--resume", "latest"])
    start = [event for event in read_events(output) if event["event"] == "start"][-1]
    assert (start["resumed"], start["step"]) == (True, 3)
    for name in ("lora", "lora-raw"):
        for step in (1, 2, 4, 5, STEPS):  # step 3's files were the first run's final ones, since overwritten
            _assert_equal(_tensors(output, name, step), _tensors(ema_run, name, step), f"{name} step {step}")
    _assert_equal(load_file(output / "state" / "ema.safetensors"), load_file(ema_run / "state" / "ema.safetensors"),
                  "the state's EMA")


def test_a_dreambooth_lora_keeps_an_ema_too(tiny_model_factory, concept_dataset, tmp_path):
    output = tmp_path / "out"
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, output, max_train_steps=2,
                     instance_prompt="a photo of frnc")
    run_cli("train_dreambooth.py", [*args, "--train_method", "lora", "--network.ema_decay", "0.9",
                                    "--network.ema_save", "raw"])
    metadata = _metadata(output / "lora.safetensors")
    assert (metadata["ss_ema_decay"], metadata["ss_weights"]) == ("0.9", "raw")
    assert not (output / "lora-raw.safetensors").exists()
