"""The run store on disk: records written atomically, unfinished writes neither listed nor left to pile up."""

from __future__ import annotations

import os
import time
from pathlib import Path

from library.atomic_files import STALE_AFTER_SECONDS
from library.gui.runs import CONFIG_NAME, RECORD_NAME, RunStore


def _age(path: Path) -> None:
    long_ago = time.time() - STALE_AFTER_SECONDS - 60
    os.utime(path, (long_ago, long_ago))


def test_run_files_leave_out_unfinished_writes(tmp_path):
    store = RunStore(tmp_path / "runs")
    record = store.create("demo", lambda folder: f'[output]\noutput_dir = "{folder}"\n')
    folder = store.folder(record.id)
    (folder / "lora.safetensors").write_bytes(b"weights")
    (folder / ".lora-step00000002.safetensors.1a2b3c4d.tmp").write_bytes(b"half")  # a save in progress
    (folder / ".state.tmp").mkdir()  # a state folder being staged
    (folder / ".state.tmp" / "adapter.safetensors").write_bytes(b"half")
    (folder / "sample").mkdir()
    (folder / "sample" / "lora_000002_00_5.png").write_bytes(b"png")
    (folder / "sample" / ".lora_000004_00_5.png.5e6f7a8b.tmp").write_bytes(b"half")

    listed = [str(path) for path in store.files(record.id)]
    assert listed == ["lora.safetensors", RECORD_NAME, CONFIG_NAME, "sample/lora_000002_00_5.png"]


def test_opening_the_store_removes_stale_temporaries_only(tmp_path):
    store = RunStore(tmp_path / "runs")
    record = store.create("demo", lambda folder: "")
    folder = store.folder(record.id)
    stale = folder / f".{RECORD_NAME}.0badc0de.tmp"  # a server killed while saving the record
    stale.write_text("{", encoding="utf-8")
    _age(stale)
    live = folder / ".lora.safetensors.c0ffee00.tmp"  # a trainer still writing
    live.write_bytes(b"being written")

    RunStore(tmp_path / "runs")
    assert not stale.exists() and live.exists()
    assert store.load(record.id) == record
