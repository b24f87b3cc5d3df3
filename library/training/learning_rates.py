"""The learning rate of each trained part, resolved once for every trainer (LoRA and full fine-tune).

``network.unet_lr`` / ``network.text_encoder_lr`` when set, else ``optimizer.learning_rate``; a rate of 0 keeps
that part frozen (sd-scripts' meaning of ``text_encoder_lr = 0``), it never falls back to the base rate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from library.config import FurnaceConfig
from library.networks.targets import TEXT_ENCODER, UNET

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartRates:
    """Learning rate per part, named as the optimizer groups and the ``lr/<part>`` logs are."""

    unet: float
    text_encoder: float

    def of(self, part: str) -> float:
        return {UNET: self.unet, TEXT_ENCODER: self.text_encoder}[part]

    def trains(self, part: str) -> bool:
        return self.of(part) > 0


def part_rates(config: FurnaceConfig) -> PartRates:
    """The run's rate per part (see module docstring)."""
    base, network = config.optimizer.learning_rate, config.network
    return PartRates(
        unet=base if network.unet_lr is None else network.unet_lr,
        text_encoder=base if network.text_encoder_lr is None else network.text_encoder_lr,
    )


def optimizer_groups(parts: Mapping[str, Sequence[torch.nn.Parameter]], rates: PartRates) -> list[dict]:
    """One optimizer group per part that has parameters and a rate above 0; a part at 0 has its parameters frozen
    instead, so no gradient is computed for them."""
    groups = []
    for part, params in parts.items():
        if not params:
            continue
        if not rates.trains(part):
            logger.info("%s learning rate is 0: its %d tensors stay frozen", part, len(params))
            for param in params:
                param.requires_grad_(False)
            continue
        groups.append({"params": list(params), "lr": rates.of(part), "name": part})
    return groups
