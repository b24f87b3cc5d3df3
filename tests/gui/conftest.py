"""GUI fixtures: confined folders holding a tiny model, a small generated dataset and the repo's presets."""

from __future__ import annotations

import shutil

import pytest
from gui_server import REPO, TINY_PROMPTS, GuiFolders

from library.data.synthetic import write_dataset


@pytest.fixture
def gui_folders(tmp_path, tiny_model_factory) -> GuiFolders:
    """runs/ (empty), models/tiny-sd1 (the session's tiny model), datasets/concept, configs/ (presets + prompts)."""
    folders = GuiFolders(tmp_path / "runs", tmp_path / "models", tmp_path / "datasets", tmp_path / "configs")
    folders.runs.mkdir()
    shutil.copytree(tiny_model_factory("sd1").folder, folders.models / "tiny-sd1")
    write_dataset(folders.datasets / "concept", count=6, repeats=2, seed=3)
    shutil.copytree(REPO / "configs", folders.configs)
    (folders.configs / TINY_PROMPTS).write_text("frnc, red circle --w 64 --h 64 --s 2 --d 1\n", encoding="utf-8")
    return folders
