"""Shared helpers for the config tests: real TOML files written to a temporary folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

BASE_SECTIONS = {
    "model": 'pretrained_model_name_or_path = "models/base.safetensors"',
    "dataset": 'train_data_dir = "datasets/train"',
}


def _run_toml(top: str = "", **sections: str | None) -> str:
    """A run TOML with a valid model + dataset; keyword args add lines to (or, with None, drop) a section."""
    bodies: dict[str, str] = dict(BASE_SECTIONS)
    for name, body in sections.items():
        if body is None:
            bodies.pop(name, None)
        else:
            bodies[name] = f"{bodies[name]}\n{body}" if name in bodies else body
    tables = "\n".join(f"[{name}]\n{body}\n" for name, body in bodies.items())
    return f"{top}\n{tables}" if top else tables


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write TOML text to tmp_path/<name> and return the path."""

    def write(text: str, name: str = "run.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def run_toml() -> Callable[..., str]:
    """Build run TOML text: run_toml(top="flat = 1", network="dim = 4", model=None)."""
    return _run_toml
