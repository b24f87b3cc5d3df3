"""The ``N_name`` image-folder convention of sd-scripts datasets, read and written in one place.

``10_sks dog/`` holds images trained 10 times per epoch, captioned with the class tokens ``sks dog`` when they have
no caption file. The training data pipeline and the dataset doctor both read folder names here, so a name means
the same to both: a folder without the prefix is a plain folder, ``0_name`` is skipped by training (as sd-scripts
skips it), and a prefix that is a number but not a whole count (``1.5_dog``, ``-2_dog``) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NUMBER_PREFIX = re.compile(r"(?P<count>-?\d+(?:\.\d*)?)_(?P<tokens>.*)", re.DOTALL)
ZERO_REPEATS = "0 repeats in the folder name: training skips this folder"


@dataclass(frozen=True)
class RepeatFolder:
    """What a ``N_name`` folder name says: its repeat count and class tokens (None when the name gives none)."""

    repeats: int
    class_tokens: str | None


class RepeatFolderError(ValueError):
    """A folder name whose repeat prefix is a number but not a whole count; ``str()`` names the folder."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"{folder}: {reason}")
        self.folder = folder
        self.reason = reason


def parse_repeat_folder(folder: Path) -> RepeatFolder | None:
    """``10_sks dog`` -> ``RepeatFolder(10, "sks dog")``; None for a folder name without a number and ``_`` first.

    Raises :class:`RepeatFolderError` for a number prefix that is negative or has a fraction.
    """
    match = _NUMBER_PREFIX.fullmatch(folder.name)
    if match is None:
        return None
    count = match.group("count")
    if not count.isdigit():
        raise RepeatFolderError(
            folder,
            f"the repeat count {count!r} before '_' must be a whole number (name the folder like "
            f"'10_{match.group('tokens')}')",
        )
    return RepeatFolder(int(count), match.group("tokens").strip() or None)


def repeat_folder_name(repeats: int, class_tokens: str) -> str:
    """The folder name that :func:`parse_repeat_folder` reads back as ``repeats`` and ``class_tokens``."""
    return f"{repeats}_{class_tokens}"
