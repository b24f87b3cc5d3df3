"""Validation loss is measured at step 0, every N steps and at the end, and moves with training.

A mechanics check on a random tiny model: the fixed-seed validation loss and the training loss fall as the LoRA
fits the data. Whether a run teaches a concept is judged on pictures, on the toy-world base
(tests/toyworld/test_learning_*.py), never by loss.
"""

from __future__ import annotations

import statistics

import pytest
from trainer_cli import base_args, read_events, run_cli

pytestmark = pytest.mark.slow  # these tests start processes or trainers


def test_validation_loss_is_recorded_and_falls_with_the_training_loss(tiny_model_factory, concept_dataset, tmp_path):
    args = base_args(
        tiny_model_factory("sd1").folder,
        concept_dataset,
        tmp_path,
        max_train_steps=60,
        learning_rate=3e-3,
        network_dim=8,
        network_alpha=8,
    )
    run_cli(
        "train_network.py",
        [*args, "--dataset.validation_split", "0.25", "--training.validation_every_n_steps", "20"],
    )
    events = read_events(tmp_path)
    validation = [event["loss"] for event in events if event["event"] == "validation"]
    # a baseline at step 0, then every 20 steps; the end's pass is not repeated at step 60
    assert [event["step"] for event in events if event["event"] == "validation"] == [0, 20, 40, 60]
    assert validation[-1] < 0.9 * validation[0], validation
    losses = [event["loss"] for event in events if event["event"] == "step"]
    assert statistics.mean(losses[-15:]) < 0.9 * statistics.mean(losses[:15]), (losses[:15], losses[-15:])
