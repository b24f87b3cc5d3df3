"""Entry point of ``train_dreambooth.py``: DreamBooth with prior preservation, as a full fine-tune writing a
single-file checkpoint, or (``--train_method lora``) as a LoRA through the same path as ``train_network.py``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from library.config import FurnaceConfig
from library.training.cli import run_trainer


def train_dreambooth(config: FurnaceConfig) -> Path | None:
    from library.training.compare_at_end import check_supported
    from library.training.ema import ema_settings
    from library.training.full_weights import FullWeights
    from library.training.lora_weights import LoraWeights
    from library.training.memory_options import check_fp8_base
    from library.training.trainer import train

    lora = config.dreambooth.train_method == "lora"
    ema_settings(config, lora_run=lora)  # before any model loads
    check_supported(config, lora_run=lora)
    check_fp8_base(config, full_fine_tune=not lora)
    weights = LoraWeights if lora else FullWeights
    return train(config, weights)


def main(argv: Sequence[str]) -> int:
    return run_trainer(argv, "train_dreambooth.py", train_dreambooth)
