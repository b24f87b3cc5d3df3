"""An embedding alone learns: the textual-inversion quickstart, shortened, teaches the toy-world base's frozen model
its concept through the new token only (prompts without it are untouched: tests/training/test_textual_inversion.py
proves every other embedding row and weight bitwise unchanged)."""

from __future__ import annotations

import pytest
from conftest import CONCEPT_SEEDS
from trainer_cli import REPO, run_cli

from library.models.loader import load_base_model
from library.networks.embedding_file import load_embedding
from library.toyworld.base_model import base_model_file
from library.toyworld.scores import concept_score
from library.toyworld.world import QUICKSTART_CONCEPT

pytestmark = pytest.mark.slow

SEEDS = CONCEPT_SEEDS[:12]


def test_embedding_learns_the_concept(toy_base, quickstart_dataset, tmp_path):
    output = tmp_path / "ti"
    run_cli("train_textual_inversion.py", [
        "--config", str(REPO / "configs" / "ti_quickstart.toml"), "--train_data_dir", str(quickstart_dataset),
        "--output_dir", str(output), "--max_train_steps", "30", "--learning_rate", "1e-2",
    ])
    base = concept_score(toy_base, QUICKSTART_CONCEPT, SEEDS)
    model = load_base_model(base_model_file())
    load_embedding(model.family, model.tokenizers, model.text_encoders, output / "ti_quickstart.safetensors",
                   QUICKSTART_CONCEPT.trigger)
    trained = concept_score(model, QUICKSTART_CONCEPT, SEEDS)
    assert base <= 0.1 and trained >= 0.75, (base, trained)
