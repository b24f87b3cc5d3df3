"""Entries of an image folder the scan passes over (a GIF, a HEIC, a symlink to nothing, a symlink loop, a folder
named like an image) are counted and named, on one line per folder, in the trainer's start summary and in the
doctor's report, the same line in both."""

from __future__ import annotations

import json
import os

import pytest
from outcome import assert_unchanged, snapshot
from PIL import Image
from trainer_cli import base_args, run_cli, run_python

pytestmark = pytest.mark.slow  # every test runs a real program

PASSED_OVER = {
    "anim.gif": ".gif is not a supported image format",
    "dangling.png": "a symlink to a missing file",
    "folder.png": "a folder named like an image",
    "loop.png": "a symlink loop",
    "photo.heic": ".heic is not a supported image format",
}


def _add_entries(folder) -> str:
    """Write the entries of ``PASSED_OVER`` into ``folder``; returns the line both reports must print."""
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "anim.gif")
    (folder / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic")
    os.symlink(folder / "missing.png", folder / "dangling.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    (folder / "folder.png").mkdir()
    named = ", ".join(f"{name} ({reason})" for name, reason in sorted(PASSED_OVER.items()))
    return f"passed over in {folder.name}: {named}"


def _table_row(lines: list[str], folder: str) -> dict[str, str]:
    """The cells of ``folder``'s row of the folder table, by column name (columns are two spaces apart)."""
    header = next(line for line in lines if line.startswith("folder "))
    row = next(line for line in lines if line.startswith(f"{folder} "))
    return dict(zip([name.strip() for name in header.split("  ") if name.strip()], row.split()))


def test_trainer_summary_names_what_it_passed_over(tiny_sd1, dataset, tmp_path):
    folder = next(dataset.glob("*_frnc"))
    expected = _add_entries(folder)
    before = snapshot(dataset)

    result = run_cli("train_network.py", base_args(tiny_sd1.folder, dataset, tmp_path / "out", max_train_steps=1),
                     check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if "passed over in" in line]
    assert len(named) == 1 and named[0].endswith(expected), result.stderr[-3000:]
    logged = [line.split(" INFO ", 1)[-1] for line in result.stderr.splitlines()]
    assert _table_row(logged, folder.name)["passed over"] == str(len(PASSED_OVER))
    assert (tmp_path / "out" / "lora.safetensors").is_file()
    assert_unchanged(before, dataset)


def test_doctor_names_what_it_passed_over(dataset):
    folder = next(dataset.glob("*_frnc"))
    expected = _add_entries(folder)
    only_gifs = dataset / "2_gifs"
    only_gifs.mkdir()
    Image.new("RGB", (64, 64)).save(only_gifs / "a.gif")
    before = snapshot(dataset)

    text = run_python(["-m", "preprocess", "doctor", str(dataset)], "doctor", check=False)
    report = run_python(["-m", "preprocess", "doctor", str(dataset), "--json"], "doctor", check=False)

    assert text.returncode == report.returncode == 1  # 2_gifs: no readable images
    assert "Traceback" not in text.stderr + report.stderr
    lines = text.stdout.splitlines()
    assert [line for line in lines if line.startswith(f"passed over in {folder.name}")] == [expected]
    assert "passed over in 2_gifs: a.gif (.gif is not a supported image format)" in lines
    assert any(line.startswith("ERROR: ") and line.endswith("2_gifs: no readable images") for line in lines)
    data = json.loads(report.stdout)
    assert data["totals"]["passed_over"] == len(PASSED_OVER) + 1
    concept = next(entry for entry in data["folders"] if entry["path"] == str(folder))
    assert {os.path.basename(item["path"]): item["reason"] for item in concept["passed_over"]} == PASSED_OVER
    assert_unchanged(before, dataset)
