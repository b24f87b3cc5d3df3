"""Entry point of ``train_network.py``: a LoRA (LoCon, DoRA) on a frozen base model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from library.config import FurnaceConfig
from library.training.cli import run_trainer


def train_lora(config: FurnaceConfig) -> Path | None:
    from library.training.compare_at_end import check_supported
    from library.training.ema import ema_settings
    from library.training.lora_weights import LoraWeights
    from library.training.memory_options import check_fp8_base
    from library.training.trainer import train

    ema_settings(config, lora_run=True)  # misplaced EMA options refused before any model loads
    check_supported(config, lora_run=True)
    check_fp8_base(config, full_fine_tune=False)
    return train(config, LoraWeights)


def main(argv: Sequence[str]) -> int:
    return run_trainer(argv, "train_network.py", train_lora)
