"""Entry point of ``train_network.py``: a LoRA (LoCon, DoRA) on a frozen base model; with a
``textual_inversion.token_string``, pivotal tuning (the token's embedding trained with the LoRA)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from library.config import ConfigError, FurnaceConfig
from library.training.cli import run_trainer
from library.training.embedding_main import new_token_problems


def check_pivotal_run(config: FurnaceConfig) -> None:
    """What pivotal tuning needs and cannot use yet, refused before any model loads."""
    problems = new_token_problems(config)
    if config.network.ema_decay:
        problems.append("network.ema_decay: pivotal tuning keeps no EMA of the embedding; unset it")
    if config.deepspeed.enabled:
        problems.append("deepspeed.enabled: pivotal tuning does not run under DeepSpeed; unset it")
    if problems:
        raise ConfigError(problems)


def check_plain_lora_run(config: FurnaceConfig) -> None:
    """Pivotal-tuning options in a run without a token to apply them to, refused before any model loads."""
    if config.textual_inversion.embedding_file != "bundled":
        raise ConfigError(["textual_inversion.embedding_file: applies to pivotal tuning, which a "
                           "textual_inversion.token_string turns on; set one, or unset embedding_file"])


def train_lora(config: FurnaceConfig) -> Path | None:
    from library.training.compare_at_end import check_supported
    from library.training.ema import ema_settings
    from library.training.lora_weights import LoraWeights
    from library.training.memory_options import check_fp8_base
    from library.training.pivotal_weights import PivotalWeights
    from library.training.trainer import train

    pivotal = bool(config.textual_inversion.token_string)
    if pivotal:
        check_pivotal_run(config)
    else:
        check_plain_lora_run(config)
    ema_settings(config, lora_run=True)  # misplaced EMA options refused before any model loads
    check_supported(config, lora_run=True)
    check_fp8_base(config, full_fine_tune=False)
    return train(config, PivotalWeights if pivotal else LoraWeights)


def main(argv: Sequence[str]) -> int:
    return run_trainer(argv, "train_network.py", train_lora)
