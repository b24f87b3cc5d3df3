"""The distributed tests drive the same trainer CLI helpers as tests/training (``trainer_cli``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
