"""Pivotal-tuning options: what train_network.py with a token_string refuses before any model loads, each problem
named by its key in one message."""

from __future__ import annotations

import pytest

from library.config import ConfigError, parse_cli
from library.training.lora_main import check_pivotal_run, check_plain_lora_run


def _config(dataset, *flags: str):
    return parse_cli(["--pretrained_model_name_or_path", "model.safetensors", "--train_data_dir", str(dataset),
                      "--resolution", "64", "--token_string", "frnc", *flags], program="train_network.py")


def test_a_pivotal_run_with_its_init_word_and_embedding_rate_passes(concept_dataset):
    config = _config(concept_dataset, "--init_word", "circle", "--embedding_lr", "5e-3",
                     "--sample.compare_at_end", "true", "--sample_prompts", "prompts.txt")
    assert config.textual_inversion.embedding_lr == 5e-3  # the grid shows each file with its own embedding
    check_pivotal_run(config)


def test_every_setting_pivotal_tuning_cannot_use_is_named(concept_dataset):
    config = _config(concept_dataset, "--network.ema_decay", "0.99", "--cache_text_encoder_outputs", "true",
                     "--network_train_unet_only", "true",
                     "--deepspeed", "true")
    with pytest.raises(ConfigError) as refused:
        check_pivotal_run(config)
    keys = [message.split(":")[0] for message in refused.value.messages]
    assert keys == ["textual_inversion.init_word", "dataset.cache_text_encoder_outputs", "network.ema_decay",
                    "deepspeed.enabled"]


def test_embedding_file_choices_and_a_run_without_a_token_refuses_it(concept_dataset):
    assert _config(concept_dataset).textual_inversion.embedding_file == "bundled"
    assert _config(concept_dataset, "--embedding_file", "separate").textual_inversion.embedding_file == "separate"
    with pytest.raises(ConfigError, match="textual_inversion.embedding_file"):
        _config(concept_dataset, "--embedding_file", "elsewhere")
    plain = parse_cli(["--pretrained_model_name_or_path", "model.safetensors", "--train_data_dir", str(concept_dataset),
                       "--textual_inversion.embedding_file", "both"], program="train_network.py")
    with pytest.raises(ConfigError) as refused:
        check_plain_lora_run(plain)
    assert [message.split(":")[0] for message in refused.value.messages] == ["textual_inversion.embedding_file"]
