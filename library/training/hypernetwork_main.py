"""Entry point of ``train_hypernetwork.py``: an A1111 hypernetwork on a frozen base model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from library.config import ConfigError, FurnaceConfig
from library.training.cli import run_trainer


def check_supported(config: FurnaceConfig) -> None:
    """Refuse, before any model loads, the options of the other trainers a hypernetwork run would silently ignore:
    it keeps no EMA and has no strengths to compare."""
    problems = []
    if config.network.ema_decay or config.dreambooth.use_ema or config.sample.use_ema is not None:
        problems.append("network.ema_decay / dreambooth.use_ema / sample.use_ema: a hypernetwork run keeps no EMA; "
                        "unset them")
    if config.sample.compare_at_end:
        problems.append("sample.compare_at_end: works for LoRA runs only; set it to false")
    if problems:
        raise ConfigError(problems)


def train_hypernetwork(config: FurnaceConfig) -> Path | None:
    from library.training.hypernetwork_weights import HypernetworkWeights
    from library.training.memory_options import check_fp8_base
    from library.training.trainer import train

    check_supported(config)
    check_fp8_base(config, full_fine_tune=False)
    return train(config, HypernetworkWeights)


def main(argv: Sequence[str]) -> int:
    return run_trainer(argv, "train_hypernetwork.py", train_hypernetwork)
