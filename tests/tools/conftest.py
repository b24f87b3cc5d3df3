"""Fixtures for the tool tests: one thread for tiny models, and LoRA files with visible updates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tool_helpers import make_lora_file


@pytest.fixture
def lora_factory(tmp_path: Path) -> Callable[..., Path]:
    """(family, name, seed, **LoraOptions fields) -> a LoRA file for the tiny model of that family."""

    def build(family: str = "sd1", name: str = "lora", seed: int = 1, **options: object) -> Path:
        return make_lora_file(family, tmp_path / f"{name}.safetensors", seed=seed, **options)

    return build
