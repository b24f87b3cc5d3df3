"""Pivotal tuning learns: the shipped preset configs/pivotal_quickstart.toml (the LoRA quickstart with a new token,
its embedding trained beside the LoRA at an embedding's rate, 40 steps) teaches the toy-world base its concept, and
prompts without the token (the pretraining vocabulary, the class word) keep the base's scores. The model is judged
as a user would load the run's output: the LoRA merged, the embedding file beside it added as the token. The run's
compare grid renders each saved file with its own embedding."""

from __future__ import annotations

import pytest
from conftest import CLASS_SEEDS, CONCEPT_SEEDS, PRIOR_SEEDS
from trainer_cli import REPO, read_events, run_cli

from library.models.loader import load_base_model
from library.networks.embedding_file import load_embedding
from library.tools.compare import merged_into
from library.toyworld.base_model import base_model_file
from library.toyworld.scores import score_model
from library.toyworld.world import QUICKSTART_CONCEPT

pytestmark = pytest.mark.slow


def test_pivotal_preset_learns_the_concept_and_keeps_the_rest(base_scores, quickstart_dataset, tmp_path):
    output = tmp_path / "pivotal"
    run_cli("train_network.py", ["--config", str(REPO / "configs" / "pivotal_quickstart.toml"), "--train_data_dir",
                                 str(quickstart_dataset), "--output_dir", str(output)])
    events = read_events(output)
    compare = next(event for event in events if event["event"] == "compare")
    assert events[-1]["event"] == "done" and compare["files"] == 2 and (output / "compare" / "compare.png").is_file()
    model = load_base_model(base_model_file())  # not the shared toy_base: the token is added to its tokenizer
    load_embedding(model.family, model.tokenizers, model.text_encoders,
                   output / "pivotal_quickstart_emb.safetensors", QUICKSTART_CONCEPT.trigger)
    with merged_into(model)(output / "pivotal_quickstart.safetensors", 1.0):
        trained = score_model(model, QUICKSTART_CONCEPT, CONCEPT_SEEDS[:12], PRIOR_SEEDS[:1], CLASS_SEEDS)
    assert base_scores.concept <= 0.05 and trained.concept >= 0.75, (trained, base_scores)
    assert trained.prior >= base_scores.prior - 0.10, (trained, base_scores)
    assert trained.kept_class >= base_scores.kept_class - 0.10, (trained, base_scores)
