"""GUI fixtures: confined folders holding a tiny model, a small generated dataset and the repo's presets."""

from __future__ import annotations

import pytest
from gui_server import GuiFolders, make_gui_folders


@pytest.fixture
def gui_folders(tmp_path, tiny_model_factory) -> GuiFolders:
    """runs/ (empty), models/tiny-sd1 (the session's tiny model), datasets/concept, configs/ (presets + prompts)."""
    return make_gui_folders(tmp_path, tiny_model_factory("sd1").folder)
