"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Every writer of the project goes through here. A file is written to a unique temporary sibling, fsynced, renamed
over the target with ``os.replace`` and its folder fsynced; any exception (KeyboardInterrupt included) removes the
temporary and leaves the target as it was. A killed process cannot run that cleanup, so temporaries are named to be
ignored and found later: ``.<name>.<random>.tmp`` beside the target. The leading dot hides them from every lister
that skips hidden names (dataset scans, the GUI's file lists), the ``.tmp`` suffix keeps them out of globs such as
``*.safetensors``, and :func:`remove_stale_temporaries` deletes the ones no live writer can still own.

Folders (a run's resume state, a diffusers model) are built in a staging folder and swapped in with two renames;
:func:`recover_folder` puts the previous folder back if a process died between them. Folder writes to one target
must not run concurrently; file writes may (the last one to finish wins, none is ever mixed with another).

This module imports nothing from the project, so every layer may use it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".tmp"
RETIRED_SUFFIX = ".old"
# A temporary untouched for this long belongs to no live writer: writers touch theirs while they write.
STALE_AFTER_SECONDS = 3600.0
# Windows flushes only files opened for writing; elsewhere read access suffices (and works on read-only files).
_FSYNC_FLAGS = os.O_RDWR if os.name == "nt" else os.O_RDONLY


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a temporary file or staging folder of this module."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMPORARY_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the path of a new, empty temporary file beside ``path`` (its folder is created if missing); it
    replaces ``path`` when the block ends normally and is removed when it raises. For libraries that insist on
    writing to a path themselves."""
    target = Path(path)
    temporary = _new_sibling(target, _create_empty_file)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(target.parent)


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Yield a file handle (``mode`` "wb" or "w"; text is UTF-8 unless ``encoding`` says otherwise) whose content
    replaces ``path`` when the block ends normally; on an exception ``path`` is left untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as temporary, open(temporary, mode, encoding=encoding) as handle:
        yield handle


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically; returns the path."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def staging_folder(target: str | os.PathLike[str]) -> Path:
    """The fixed staging folder of ``target``, for writers in several processes that must agree on one place
    (e.g. every rank of a distributed run saving its part of the state); pass it to :func:`replace_folder`."""
    target = Path(target)
    return target.with_name(f".{target.name}{TEMPORARY_SUFFIX}")


def replace_folder(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Swap the complete folder ``staging`` in for ``target`` (which may not exist yet).

    The old folder is renamed aside before the new one is renamed in, and deleted after; a process killed between
    the two renames leaves the old folder aside, where :func:`recover_folder` finds it.
    """
    staging, target = Path(staging), Path(target)
    recover_folder(target)
    retired = _retired(target)
    shutil.rmtree(retired, ignore_errors=True)
    _fsync_tree(staging)
    if target.exists():
        os.replace(target, retired)
    os.replace(staging, target)
    _fsync_directory(target.parent)
    shutil.rmtree(retired, ignore_errors=True)


def recover_folder(target: str | os.PathLike[str]) -> bool:
    """Put the previous ``target`` back if a :func:`replace_folder` died between its renames; True if it did."""
    target = Path(target)
    retired = _retired(target)
    if target.exists() or not retired.is_dir():
        return False
    try:
        os.replace(retired, target)
    except FileNotFoundError:  # another process (a rank of the same run) recovered it first
        return False
    logger.warning("%s: restored the previous folder, as its replacement was interrupted", target)
    return True


@contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new, empty staging folder beside ``target`` (whose parent is created if missing); it replaces
    ``target`` (and everything in it) when the block ends normally and is removed when it raises."""
    target = Path(target)
    staging = _new_sibling(target, os.mkdir)
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_temporaries(
    folder: str | os.PathLike[str], max_age: float = STALE_AFTER_SECONDS
) -> list[Path]:
    """Delete the temporaries directly in ``folder`` untouched for ``max_age`` seconds (left by killed writers);
    returns what was removed. A missing folder has none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in folder.iterdir():
        try:
            if not is_temporary(entry) or now - entry.lstat().st_mtime < max_age:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # its writer finished or another cleaner was faster
            continue
        removed.append(entry)
        logger.info("removed %s, left behind by an interrupted write", entry)
    return removed


def _retired(target: Path) -> Path:
    return target.with_name(f".{target.name}{RETIRED_SUFFIX}")


def _new_sibling(target: Path, create: Callable[[Path], object]) -> Path:
    """Create (with ``create``) and return a sibling of ``target`` with a name no other writer uses."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate


def _create_empty_file(path: Path) -> None:
    # os.open honours the umask, so the final file gets the usual permissions (mkstemp would make it private).
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, _FSYNC_FLAGS)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable, where the platform allows opening folders (not on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(descriptor)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync_file(Path(root, name))
        _fsync_directory(Path(root))
