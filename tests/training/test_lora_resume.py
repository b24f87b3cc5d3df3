"""Exact resume: interrupted (SIGTERM) or extended runs end with the same LoRA tensors, bit for bit, on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from trainer_cli import REPO, base_args, read_events, run_cli

pytestmark = pytest.mark.slow  # these tests start processes or trainers

STEPS = 24


def _assert_identical(left, right) -> None:
    a, b = load_file(left), load_file(right)
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:2]}"


def _args(tiny_model_factory, dataset, output, **overrides):
    settings = {"max_train_steps": STEPS, "network_dropout": 0.1, "noise_offset": 0.05, "shuffle_caption": "true"}
    settings.update(overrides)
    return base_args(tiny_model_factory("sd1").folder, dataset, output, **settings)


def _wait_for_step(process: subprocess.Popen, output, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    progress = output / "progress.jsonl"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"trainer ended before step {step}: {process.communicate()}")
        if progress.is_file() and any(
            event["event"] == "step" and event["step"] >= step for event in read_events(output)
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"no step {step} within {timeout} s")


def test_sigterm_saves_state_and_resume_is_exact(tiny_model_factory, concept_dataset, tmp_path):
    reference = tmp_path / "reference"
    run_cli("train_network.py", _args(tiny_model_factory, concept_dataset, reference))

    interrupted = tmp_path / "interrupted"
    args = _args(tiny_model_factory, concept_dataset, interrupted)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train_network.py"), *args],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_step(process, interrupted, 3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    stopped = [event for event in read_events(interrupted) if event["event"] == "stopped"]
    assert stopped and 3 <= stopped[0]["step"] < STEPS
    assert (interrupted / "state" / "furnace_state.json").is_file()
    assert not (interrupted / "lora.safetensors").exists()

    run_cli("train_network.py", [*args, "--resume", "latest"])
    events = read_events(interrupted)
    resumed_start = [event for event in events if event["event"] == "start"][-1]
    assert resumed_start["resumed"] is True and resumed_start["step"] == stopped[0]["step"]
    _assert_identical(reference / "lora.safetensors", interrupted / "lora.safetensors")


def test_extending_a_finished_run_equals_one_long_run(tiny_model_factory, concept_dataset, tmp_path):
    reference = tmp_path / "reference"
    run_cli("train_network.py", _args(tiny_model_factory, concept_dataset, reference, max_train_steps=12))
    staged = tmp_path / "staged"
    first = _args(tiny_model_factory, concept_dataset, staged, max_train_steps=5)
    run_cli("train_network.py", [*first, "--save_state_on_train_end", "true"])
    second = _args(tiny_model_factory, concept_dataset, staged, max_train_steps=12)
    run_cli("train_network.py", [*second, "--resume", str(staged / "state")])
    _assert_identical(reference / "lora.safetensors", staged / "lora.safetensors")


def test_resume_latest_without_state_is_a_clear_error(tiny_model_factory, concept_dataset, tmp_path):
    result = run_cli(
        "train_network.py", [*_args(tiny_model_factory, concept_dataset, tmp_path), "--resume", "latest"], check=False
    )
    assert result.returncode == 1
    assert "training.resume" in result.stderr and "Traceback" not in result.stderr
