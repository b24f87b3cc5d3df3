"""Fixtures for the LoRA network tests: tiny models, full-size models on the meta device, non-trivial adapters."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from library.models.families import ModelFamily, get_family
from library.models.single_file import reference_configs
from library.models.tiny import Components, build_components, tiny_configs
from library.networks import LoraNetwork


@pytest.fixture
def tiny() -> Callable[[str], tuple[ModelFamily, Components]]:
    """family name -> (family, fresh tiny components with seed 0)."""

    def build(name: str) -> tuple[ModelFamily, Components]:
        family = get_family(name)
        return family, build_components(family, tiny_configs(family), seed=0)

    return build


@pytest.fixture
def full_size_meta() -> Callable[[str], tuple[ModelFamily, Components]]:
    """family name -> (family, the real full-size architecture on the meta device: shapes only, no memory)."""

    def build(name: str) -> tuple[ModelFamily, Components]:
        family = get_family(name)
        with torch.device("meta"):
            return family, build_components(family, reference_configs(name), seed=0)

    return build


@pytest.fixture
def perturb() -> Callable[[LoraNetwork, int], None]:
    """Give every adapter a random non-zero up matrix (and DoRA magnitude), so its effect is visible."""

    @torch.no_grad()
    def apply(network: LoraNetwork, seed: int = 1) -> None:
        generator = torch.Generator().manual_seed(seed)
        for layer in network.modules.values():
            up = layer.lora_B["default"].weight
            up.copy_(torch.randn(up.shape, generator=generator) * 0.1)
            if layer.use_dora.get("default", False):
                magnitude = layer.lora_magnitude_vector["default"].weight
                magnitude.mul_(1 + 0.1 * torch.rand(magnitude.shape, generator=generator))

    return apply
