"""Fixtures for end-to-end trainer tests: a generated dataset (tiny models come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from library.data.synthetic import write_dataset


@pytest.fixture(scope="session")
def concept_dataset(tmp_path_factory) -> Path:
    """``root/5_frnc/`` with 12 generated image/caption pairs."""
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root, count=12, repeats=5, seed=3)
    return root
