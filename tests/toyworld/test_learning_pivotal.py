"""Pivotal tuning learns: the LoRA quickstart with a new token (its embedding trained beside the LoRA, at an
embedding's rate), shortened to 40 steps, teaches the toy-world base its concept, and prompts without the token (the
pretraining vocabulary, the class word) keep the base's scores. The model is judged as a user would load the run's
output: the LoRA merged, the embedding file beside it added as the token."""

from __future__ import annotations

import pytest
from conftest import CLASS_SEEDS, CONCEPT_SEEDS, PRIOR_SEEDS
from trainer_cli import REPO, run_cli

from library.models.loader import load_base_model
from library.networks.embedding_file import load_embedding
from library.tools.compare import merged_into
from library.toyworld.base_model import base_model_file
from library.toyworld.scores import score_model
from library.toyworld.world import QUICKSTART_CONCEPT

pytestmark = pytest.mark.slow

PIVOTAL = ["--max_train_steps", "40", "--token_string", "frnc", "--init_word", "circle", "--embedding_lr", "2e-2",
           "--text_encoder_lr", "1e-3", "--lr_scheduler", "constant", "--optimizer.weight_decay", "0",
           "--embedding_file", "separate", "--compare_at_end", "false"]


def test_pivotal_run_learns_the_concept_and_keeps_the_rest(base_scores, quickstart_dataset, tmp_path):
    output = tmp_path / "pivotal"
    run_cli("train_network.py", ["--config", str(REPO / "configs" / "quickstart.toml"), "--train_data_dir",
                                 str(quickstart_dataset), "--output_dir", str(output), *PIVOTAL])
    model = load_base_model(base_model_file())  # not the shared toy_base: the token is added to its tokenizer
    load_embedding(model.family, model.tokenizers, model.text_encoders, output / "quickstart_emb.safetensors",
                   QUICKSTART_CONCEPT.trigger)
    with merged_into(model)(output / "quickstart.safetensors", 1.0):
        trained = score_model(model, QUICKSTART_CONCEPT, CONCEPT_SEEDS[:12], PRIOR_SEEDS[:1], CLASS_SEEDS)
    assert base_scores.concept <= 0.05 and trained.concept >= 0.75, (trained, base_scores)
    assert trained.prior >= base_scores.prior - 0.10, (trained, base_scores)
    assert trained.kept_class >= base_scores.kept_class - 0.10, (trained, base_scores)
