"""Fixtures for trainer tests: a generated dataset, a one-layer accelerate set-up (tiny models come from
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from library.data.synthetic import write_dataset


@pytest.fixture(scope="session")
def concept_dataset(tmp_path_factory) -> Path:
    """``root/5_frnc/`` with 12 generated image/caption pairs."""
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root, count=12, repeats=5, seed=3)
    return root


@pytest.fixture
def fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps one process state per interpreter and refuses another mixed precision in it: a test that sets
    up its own accelerator in this process starts without that state and leaves none behind."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def one_layer_accelerator(fresh_accelerate_state) -> Iterator[tuple]:
    """A real accelerate set-up (CPU) training one Linear layer: (accelerator, layer, optimizer). Each test registers
    the state hooks it needs."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer, optimizer = accelerator.prepare(layer, optimizer)
    yield accelerator, layer, optimizer
