"""A hypernetwork learns: the hypernetwork quickstart preset, shortened, teaches the toy-world base its concept, judged
on pictures (conftest.py), and its fixed-seed validation loss falls."""

from __future__ import annotations

import pytest
from trainer_cli import REPO, read_events, run_cli

from library.networks.hypernetwork import attach, detach
from library.networks.hypernetwork_file import load_hypernetwork
from library.toyworld.scores import concept_probes, judge_probes, share_right
from library.toyworld.world import QUICKSTART_CONCEPT

pytestmark = pytest.mark.slow

SEEDS = range(12)  # trigger-prompt samples, the same for the base and the trained model


def test_hypernetwork_learns_the_concept(toy_base, quickstart_dataset, tmp_path):
    output = tmp_path / "hypernetwork"
    run_cli("train_hypernetwork.py", [
        "--config", str(REPO / "configs" / "hypernetwork_quickstart.toml"), "--train_data_dir",
        str(quickstart_dataset), "--output_dir", str(output), "--max_train_steps", "40", "--learning_rate", "3e-3",
        "--sample.prompts", "", "--save_every_n_steps", "40", "--dataset.validation_split", "0.25",
    ])
    validation = [event["loss"] for event in read_events(output) if event["event"] == "validation"]
    assert len(validation) == 2 and validation[1] < 0.8 * validation[0], validation

    probes = concept_probes(QUICKSTART_CONCEPT, SEEDS)
    base = share_right(judge_probes(toy_base, probes))
    handles = attach(toy_base.unet, load_hypernetwork(output / "hypernetwork_quickstart.pt"))
    try:
        trained = share_right(judge_probes(toy_base, probes))
    finally:
        detach(toy_base.unet, handles)
    assert base <= 0.1 and trained >= 0.7, (base, trained)
