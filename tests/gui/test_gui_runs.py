"""The run store on disk: records written atomically, unfinished writes neither listed nor left to pile up."""

from __future__ import annotations

import os
import time
from pathlib import Path

from library.atomic_files import STALE_AFTER_SECONDS
from library.gui.runs import CONFIG_NAME, FINAL, OTHER, RECORD_NAME, SAMPLE, STATE, WEIGHTS, RunStore, file_kind


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


def test_file_kinds_follow_the_trainers_own_names(tmp_path):
    """The run page sorts files by the names the trainer writes (taken here from the trainer's modules)."""
    from library.sampling.files import sample_path
    from library.training.run_files import epoch_path, final_path, raw_companion, step_path
    from library.training.state import ADAPTER_FILE, STATE_DIR_NAME

    store = RunStore(tmp_path / "runs")
    record = store.create("demo", lambda folder: f'[output]\noutput_dir = "{folder}"\noutput_name = "sks"\n')
    folder = store.folder(record.id)
    name = store.output_name(record.id)
    written = {
        final_path(folder, name): FINAL,
        step_path(folder, name, 20): WEIGHTS,
        epoch_path(folder, name, 1): WEIGHTS,
        raw_companion(final_path(folder, name), name): WEIGHTS,
        folder / STATE_DIR_NAME / ADAPTER_FILE: STATE,
        sample_path(folder, name, 20, 0, 5): SAMPLE,
        folder / CONFIG_NAME: OTHER,
    }
    assert name == "sks"
    assert {path: file_kind(path.relative_to(folder), name) for path in written} == written
    assert store.output_name("missing-run") is None
