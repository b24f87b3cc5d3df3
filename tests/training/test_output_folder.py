"""A run's output folder at start: what killed runs left half-written is cleared, other runs' writes are not."""

from __future__ import annotations

import os
import time

from library.atomic_files import STALE_AFTER_SECONDS
from library.config import load_config, loads_config
from library.folder_lock import LOCK_FILE
from library.training.run_setup import prepare_output


def test_prepare_output_removes_stale_temporaries_and_writes_the_config(tmp_path):
    output = tmp_path / "run"
    (output / "sample").mkdir(parents=True)
    long_ago = time.time() - STALE_AFTER_SECONDS - 60
    stale = [output / ".lora-step00000004.safetensors.0badc0de.tmp", output / "sample" / ".lora_000004_00_5.png.1.tmp"]
    for path in stale:
        path.write_bytes(b"half")
        os.utime(path, (long_ago, long_ago))
    (output / ".state.tmp").mkdir()  # staged long ago, by a run killed mid-save
    os.utime(output / ".state.tmp", (long_ago, long_ago))
    kept = [output / "lora-step00000002.safetensors", output / ".lora.safetensors.c0ffee00.tmp"]  # done; in progress
    for path in kept:
        path.write_bytes(b"x")

    config = loads_config(
        "[model]\npretrained_model_name_or_path = 'base.safetensors'\n[dataset]\ntrain_data_dir = 'data'\n"
        f"[output]\noutput_dir = '{output}'\n",
        "run.toml",
    )
    paths = prepare_output(config, is_main=True)
    paths.lock.release()

    assert paths.output_dir == output
    assert sorted(output.rglob("*")) == sorted([*kept, output / "config.toml", output / LOCK_FILE, output / "sample"])
    assert load_config(output / "config.toml") == config
