"""Presets: the shipped TOMLs of the configs folder (read-only) and the user's own, saved from the form under the runs
root's `presets/` folder. A user preset's name is a plain file stem, so it can never name a path elsewhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from library.atomic_files import write_text_atomic
from library.config import ConfigError
from library.config.loader import read_toml_text

from .forms import REQUEST_SOURCE, field_messages, toml_to_values, values_to_toml
from .paths import PathRefused

PRESETS_FOLDER = "presets"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class PresetConflict(ValueError):
    """A save or delete that would change a shipped preset or overwrite a saved one unasked."""


class PresetNotFound(LookupError):
    """No saved preset of that name."""


def user_presets_dir(runs_root: Path) -> Path:
    return runs_root / PRESETS_FOLDER


def preset_trainer(values: dict[str, Any]) -> str:
    """The trainer a preset is written for: a `[textual_inversion]` section means train_textual_inversion.py (with a
    `[network]` section too, train_network.py's pivotal tuning), a `[hypernetwork]` section train_hypernetwork.py, a
    `[dreambooth]` section train_dreambooth.py."""
    if values.get("textual_inversion") and not values.get("network"):
        return "textual_inversion"
    if values.get("hypernetwork"):
        return "hypernetwork"
    return "dreambooth" if values.get("dreambooth") else "lora"


def _read(folder: Path, user: bool) -> list[dict[str, Any]]:
    """Each `*.toml` of a folder as form values and the trainer it is for (or its messages when it does not read)."""
    listed = []
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        entry = {"name": path.stem, "user": user, "values": {}, "trainer": "lora", "messages": []}
        try:
            values = toml_to_values(read_toml_text(path), path.stem)
            entry.update(values=values, trainer=preset_trainer(values))
        except ConfigError as error:
            entry["messages"] = field_messages(error)
        listed.append(entry)
    return listed


def list_presets(configs_dir: Path, runs_root: Path) -> list[dict[str, Any]]:
    """The shipped presets, then the user's."""
    return _read(configs_dir, user=False) + _read(user_presets_dir(runs_root), user=True)


def _user_preset_path(name: str, configs_dir: Path, runs_root: Path) -> Path:
    """Where a user preset of this name lives; refuses names that are paths, malformed or a shipped preset's."""
    if "/" in name or "\\" in name or ".." in name:
        raise PathRefused(f"preset {name!r}: a preset name is a plain name, not a path")
    if not _NAME.match(name):
        raise ConfigError([f"{REQUEST_SOURCE}: name: a preset name is 1-64 letters, digits, '-' or '_', starting with "
                           f"a letter or digit (got {name!r})"])
    if (configs_dir / f"{name}.toml").exists():
        raise PresetConflict(f"preset {name}: a shipped preset has this name; choose another")
    return user_presets_dir(runs_root) / f"{name}.toml"


def save_preset(name: str, values: dict[str, Any], configs_dir: Path, runs_root: Path, replace: bool) -> Path:
    """Write the form's values as `<runs root>/presets/<name>.toml` (keys checked; a preset may be partial)."""
    path = _user_preset_path(name, configs_dir, runs_root)
    text = values_to_toml(values)
    toml_to_values(text, REQUEST_SOURCE)
    if path.exists() and not replace:
        raise PresetConflict(f"preset {name}: already saved; confirm to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text)


def delete_preset(name: str, configs_dir: Path, runs_root: Path) -> None:
    path = _user_preset_path(name, configs_dir, runs_root)
    if not path.is_file():
        raise PresetNotFound(f"preset {name}: no saved preset of this name")
    path.unlink()
