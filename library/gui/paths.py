"""Confine every path the web API touches to the folders the server was started with.

A request names a file relative to a root; `..`, absolute paths and symlinks that lead outside the root are
refused, so a token holder can read runs and datasets but nothing else on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class PathRefused(ValueError):
    """A path outside the configured roots; the message names the path and the roots."""


def confine(root: Path, relative: str) -> Path:
    """`root / relative`, resolved (symlinks followed), refused unless it stays inside `root`."""
    if not relative or relative in (".", "/"):
        return root.resolve()
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts:
        raise PathRefused(f"{relative}: only paths inside the configured folder are allowed")
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise PathRefused(f"{relative}: leads outside the configured folder (symlink)")
    return resolved


def inside_any(path: Path, roots: Sequence[Path]) -> bool:
    """Whether `path` (resolved, symlinks followed) lies in one of `roots`."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def relative_name(base: Path, path: Path | str) -> str:
    """How the API names ``path``, a file or folder inside ``base``: relative to it, '/'-separated. The folders above
    it are resolved, not the entry itself, so a symlinked image keeps its name in the dataset."""
    path = Path(path)
    return (path.parent.resolve() / path.name).relative_to(base.resolve()).as_posix()


def dataset_location(path: Path, roots: Sequence[Path]) -> dict[str, Any] | None:
    """``path`` as the dataset browser names it: ``root``, the number of the datasets root holding it, and ``path``
    inside that root; None when no root holds it."""
    for index, root in enumerate(roots):
        if inside_any(path, [root]):
            return {"root": index, "path": relative_name(root, path.resolve())}
    return None


def within_dataset(folder: Path, text: str) -> str:
    """The doctor's text as the page shows it: the dataset's files named relative to the dataset, the dataset by its
    name (the report names them by absolute path, as the command line prints them)."""
    for location in dict.fromkeys((str(folder.resolve()), str(folder))):
        text = text.replace(location + os.sep, "").replace(location, folder.name)
    return text
