"""Tiny models loaded through the real loader, for rendering previews."""

from __future__ import annotations

import pytest

from library.models.loader import BaseModel, load_base_model


@pytest.fixture(scope="module")
def load_tiny(tiny_model_factory):
    """Return a function family -> a freshly loaded tiny BaseModel (tests that change weights or modes use this)."""

    def load(family: str) -> BaseModel:
        return load_base_model(tiny_model_factory(family).folder)

    return load


@pytest.fixture(scope="module")
def sd1_model(load_tiny) -> BaseModel:
    """A tiny SD1 model shared by tests that only read it."""
    return load_tiny("sd1")
