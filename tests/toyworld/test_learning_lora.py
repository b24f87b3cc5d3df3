"""A LoRA learns: the quickstart, run exactly as shipped, teaches the toy-world base its concept without bleeding.

This and test_learning_dreambooth.py are the suite's claims that a run *learns*, so they use the pretrained
toy-world base and the judge (conftest.py), never a falling loss.
"""

from __future__ import annotations

import pytest
from conftest import score
from trainer_cli import REPO, run_cli

from library.tools.compare import merged_into

pytestmark = pytest.mark.slow


def test_base_draws_what_prompts_name_and_not_the_concept(base_scores):
    assert base_scores.prior >= 0.8, base_scores
    assert base_scores.kept_class >= 0.8, base_scores
    assert base_scores.concept <= 0.05, base_scores


def test_quickstart_lora_learns_the_concept_without_bleeding(toy_base, base_scores, quickstart_dataset, tmp_path):
    output = tmp_path / "quickstart"
    run_cli("train_network.py", ["--config", str(REPO / "configs" / "quickstart.toml"),
                                 "--train_data_dir", str(quickstart_dataset), "--output_dir", str(output)])
    assert (output / "compare" / "compare.png").is_file()
    with merged_into(toy_base)(output / "quickstart.safetensors", 1.0):
        trained = score(toy_base)
    assert trained.concept >= 0.8, (trained, base_scores)
    assert trained.prior >= base_scores.prior - 0.10, (trained, base_scores)
    assert trained.kept_class >= base_scores.kept_class - 0.10, (trained, base_scores)
