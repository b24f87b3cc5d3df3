"""DreamBooth learns, and prior preservation keeps the class: the DreamBooth quickstart preset on the toy-world
base, with and without its class images, judged on pictures (conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import score
from trainer_cli import REPO, run_cli

from library.models.loader import load_base_model
from library.toyworld.scores import Scores

pytestmark = pytest.mark.slow


def _dreambooth(dataset: Path, output: Path, *overrides: str) -> Scores:
    run_cli("train_dreambooth.py", ["--config", str(REPO / "configs" / "dreambooth_quickstart.toml"),
                                    "--train_data_dir", str(dataset), "--output_dir", str(output),
                                    "--sample.prompts", "", *overrides])
    return score(load_base_model(output / "dreambooth_quickstart.safetensors"))


def test_prior_preservation_learns_the_concept_and_keeps_the_class(base_scores, quickstart_dataset, tmp_path):
    """A full fine-tune drifts: left alone, the model shifts every colour along the hue circle towards the new one.
    The class images anchor it: the class prompt keeps drawing what the base drew, and the rest drifts far less."""
    with_prior = _dreambooth(quickstart_dataset, tmp_path / "prior",
                             "--dreambooth.class_data_dir", str(tmp_path / "class"))
    without_prior = _dreambooth(quickstart_dataset, tmp_path / "no_prior", "--dreambooth.class_data_dir", "",
                                "--dreambooth.num_class_images", "0")
    assert with_prior.concept >= 0.8, with_prior
    assert with_prior.kept_class >= base_scores.kept_class - 0.10, (with_prior, base_scores)
    assert without_prior.concept >= 0.8, without_prior
    assert without_prior.prior < with_prior.prior - 0.10, (without_prior, with_prior)
    assert without_prior.kept_class <= with_prior.kept_class, (without_prior, with_prior)
