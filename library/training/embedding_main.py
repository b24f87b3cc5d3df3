"""Entry point of ``train_textual_inversion.py``: one new token's embedding on a frozen base model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from library.config import ConfigError, FurnaceConfig
from library.training.cli import run_trainer


def new_token_problems(config: FurnaceConfig) -> list[str]:
    """What every run that trains a new token's embedding (textual inversion, pivotal tuning) needs."""
    problems = []
    if not config.textual_inversion.init_word:
        problems.append("textual_inversion.init_word: is required, a word to start from, e.g. 'circle'")
    if config.dataset.cache_text_encoder_outputs:
        problems.append("dataset.cache_text_encoder_outputs: the text encoders' outputs change as the embedding "
                        "trains; set it to false")
    return problems


def check_embedding_run(config: FurnaceConfig) -> None:
    """What a textual-inversion run needs and cannot use, refused before any model loads."""
    section, problems = config.textual_inversion, []
    if not section.token_string:
        problems.append("textual_inversion.token_string: is required, the new word to learn, e.g. 'frnc'")
    problems += new_token_problems(config)
    if config.network.ema_decay or config.dreambooth.use_ema or config.sample.use_ema:
        problems.append("network.ema_decay / dreambooth.use_ema / sample.use_ema: train_textual_inversion.py keeps "
                        "no EMA; unset them")
    if config.sample.compare_at_end:
        problems.append("sample.compare_at_end: compares LoRA strengths; set it to false for an embedding")
    if section.embedding_file != "bundled":
        problems.append("textual_inversion.embedding_file: is for pivotal tuning (train_network.py); "
                        "train_textual_inversion.py writes the embedding file alone; unset it")
    if config.network.network_weights:
        problems.append("network.network_weights: train_textual_inversion.py trains no LoRA; unset it")
    if config.deepspeed.enabled:
        problems.append("deepspeed.enabled: train_textual_inversion.py does not run under DeepSpeed; unset it")
    if problems:
        raise ConfigError(problems)


def train_embedding(config: FurnaceConfig) -> Path | None:
    from library.training.embedding_weights import EmbeddingWeights
    from library.training.memory_options import check_fp8_base
    from library.training.trainer import train

    check_embedding_run(config)
    check_fp8_base(config, full_fine_tune=False)
    return train(config, EmbeddingWeights)


def main(argv: Sequence[str]) -> int:
    return run_trainer(argv, "train_textual_inversion.py", train_embedding)
