"""Fixtures for the tool tests: LoRA files with visible updates, and a small dataset for tools run by the trainer.

Tests of tools a training run drives use the trainer CLI helpers of tests/training (``trainer_cli``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))  # before tool_helpers imports it

from tool_helpers import make_lora_file  # noqa: E402

from library.data.synthetic import write_dataset  # noqa: E402


@pytest.fixture
def lora_factory(tmp_path: Path) -> Callable[..., Path]:
    """(family, name, seed, **LoraOptions fields) -> a LoRA file for the tiny model of that family."""

    def build(family: str = "sd1", name: str = "lora", seed: int = 1, **options: object) -> Path:
        return make_lora_file(family, tmp_path / f"{name}.safetensors", seed=seed, **options)

    return build


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    """``root/2_frnc/`` with 4 generated image/caption pairs."""
    root = tmp_path_factory.mktemp("tool-dataset")
    write_dataset(root, count=4, repeats=2, seed=3)
    return root
