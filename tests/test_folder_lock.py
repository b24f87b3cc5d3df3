"""The folder lock: one holder at a time, named to the refused; released by release() (or by the holder's end)."""

from __future__ import annotations

import os

import pytest

from library.folder_lock import LOCK_FILE, FolderInUse, lock_folder


def test_a_held_folder_refuses_a_second_lock_naming_the_holder_until_released(tmp_path):
    folder = tmp_path / "run"
    held = lock_folder(folder, "wait for it")
    with pytest.raises(FolderInUse, match=rf"^{folder} is in use by pid {os.getpid()} on .+ since .+; wait for it$"):
        lock_folder(folder, "wait for it")
    assert (folder / LOCK_FILE).read_text(encoding="utf-8").startswith(f"pid {os.getpid()} ")  # the record survives

    held.release()
    lock_folder(folder, "wait for it").release()
