"""Reliability fixtures: the image, trainer and GUI helpers of their own test folders, and a small generated dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from library.data.synthetic import write_dataset

_TESTS = Path(__file__).resolve().parents[1]
# image_samples, trainer_cli and gui_server, imported by name like their own folders do
sys.path[:0] = [str(_TESTS / folder) for folder in ("data", "training", "gui")]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """``dataset/3_frnc/`` with 6 generated image/caption pairs, fresh for each test (tests add files to it)."""
    root = tmp_path / "dataset"
    write_dataset(root, count=6, repeats=3, seed=3)
    return root


@pytest.fixture
def gui_folders(tmp_path, tiny_model_factory):
    """The folders a GUI test server is confined to (see ``tests/gui/gui_server.py``)."""
    from gui_server import make_gui_folders

    return make_gui_folders(tmp_path, tiny_model_factory("sd1").folder)
