"""One writer per folder: an exclusive lock held for the writer's life, naming its holder.

The lock is ``fcntl.flock`` on a hidden file in the folder. The kernel releases it when its holder ends, however it
ends, so a lock file left behind by a dead process never blocks anyone; that is also why the file is never removed
(a process that opened it just before the removal would lock a file nobody else sees). The file holds the holder's
pid, host and start time, which a refused second writer names. The lock is advisory: it keeps out the writers that
take it (trainers on an output folder, GUI servers on a runs root). The record is written in place, not through
``atomic_files``: the lock belongs to the file itself, which a rename would swap for another.

This module imports nothing from the project, so every layer may use it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

LOCK_FILE = ".furnace.lock"


class FolderInUse(Exception):
    """The folder is locked by another live process; the message names it and says what to do."""


class FolderLock:
    """A held lock; :meth:`release` it when done (the process's end releases it too)."""

    def __init__(self, folder: Path, handle: IO[str]) -> None:
        self.folder = folder
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the only descriptor of the open file releases the flock
            self._handle = None


def lock_folder(folder: str | os.PathLike[str], advice: str) -> FolderLock:
    """Lock ``folder`` (created if missing) for this process, or raise FolderInUse naming the holder, followed by
    ``advice`` (what the refused user can do)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # "a+": a refused attempt leaves the record intact
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FolderInUse(f"{folder} is in use by {holder}; {advice}") from None
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
    handle.flush()
    return FolderLock(folder, handle)
