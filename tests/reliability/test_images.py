"""Hostile image files through the real programs: a decompression bomb (a small file declaring 10^10 pixels), a
truncated image and a text file named like a PNG are refused by the trainer, the doctor and crop with the same reason,
on one line naming the file, without a traceback, and nothing written earlier changes."""

from __future__ import annotations

import pytest
import image_samples as samples
from outcome import assert_one_line_user_error, assert_unchanged, snapshot
from trainer_cli import base_args, read_events, run_cli, run_python

pytestmark = pytest.mark.slow  # every test runs a real program

BOMB_REASON = "too large to decode safely"
# hostile file -> (how to write it, the reason every program gives)
KINDS = {
    "bomb": (samples.decompression_bomb_png, BOMB_REASON),
    "truncated": (samples.truncated_jpeg, "cannot decode"),
    "text": (samples.not_an_image, "not an image"),
}


def _concept(dataset):
    return next(dataset.glob("*_frnc"))


def _add_bomb(dataset):
    folder = _concept(dataset)
    (folder / "bomb.txt").write_text("frnc, red circle", encoding="utf-8")
    return samples.decompression_bomb_png(folder / "bomb.png")


def test_trainer_stops_on_a_bomb_naming_it(tiny_sd1, dataset, tmp_path):
    bomb = _add_bomb(dataset)
    before = snapshot(dataset)
    output = tmp_path / "out"
    args = base_args(tiny_sd1.folder, dataset, output, max_train_steps=1)
    result = run_cli("train_network.py", [*args, "--logging.log_level", "error"], check=False)

    assert result.returncode == 1, result.stderr[-3000:]
    line = assert_one_line_user_error(result.stderr, str(bomb), BOMB_REASON, "on_bad_image")
    last = read_events(output)[-1]
    assert (last["event"], f"error: {last['message']}") == ("error", line)
    assert not list(output.rglob("*.safetensors"))
    assert_unchanged(before, dataset)


def test_trainer_skips_a_bomb_naming_it(tiny_sd1, dataset, tmp_path):
    bomb = _add_bomb(dataset)
    before = snapshot(dataset)
    output = tmp_path / "out"
    args = base_args(tiny_sd1.folder, dataset, output, max_train_steps=1)
    result = run_cli("train_network.py", [*args, "--dataset.on_bad_image", "skip"], check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if "bomb.png" in line]
    assert len(named) == 1 and "skipping unreadable image" in named[0], result.stderr[-3000:]
    assert str(bomb) in named[0] and BOMB_REASON in named[0]
    assert (output / "lora.safetensors").is_file()
    assert_unchanged(before, dataset)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_doctor_grades_a_hostile_image_by_on_bad_image(dataset, kind):
    write, reason = KINDS[kind]
    hostile = write(_concept(dataset) / "hostile.png")
    before = snapshot(dataset)

    stopped = run_python(["-m", "preprocess", "doctor", str(dataset)], "doctor", check=False)
    skipped = run_python(["-m", "preprocess", "doctor", str(dataset), "--skip-bad-images"], "doctor", check=False)

    for result, code, grade in ((stopped, 1, "ERROR"), (skipped, 0, "WARNING")):
        assert result.returncode == code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        named = [line for line in result.stdout.splitlines() if "hostile.png" in line]
        assert len(named) == 1 and named[0].startswith(f"{grade}: "), result.stdout
        assert f"{hostile} ({reason}" in named[0]
    assert_unchanged(before, dataset)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crop_skips_a_hostile_image_and_keeps_earlier_output(dataset, tmp_path, kind):
    write, reason = KINDS[kind]
    out = tmp_path / "cropped"
    crop = ["-m", "preprocess", "crop", str(dataset), "--out", str(out), "--size", "64"]
    run_python(crop, "crop")
    earlier = snapshot(out)
    hostile = write(_concept(dataset) / "hostile.png")

    result = run_python(crop, "crop", check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if "hostile.png" in line]
    assert len(named) == 1 and f"{hostile}: {reason}" in named[0], result.stderr[-3000:]
    assert "skipped files: 1" in result.stdout and f"{hostile}: {reason}" in result.stdout
    assert_unchanged(earlier, out)
    assert snapshot(out).keys() == earlier.keys()  # nothing written for the hostile file
