"""The command family as a whole: help texts and errors reported without tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from preprocess.__main__ import main


@pytest.mark.slow
def test_top_level_help_lists_every_command(run_cli) -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("crop", "tag", "caption", "tags", "doctor"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("crop", ["--size", "--mode", "--buckets", "--split", "--flip", "--dry-run", "--in-place"]),
        ("tag", ["--model", "--general-threshold", "--character-threshold", "--rating", "--max-tags", "--existing"]),
        ("caption", ["--model", "--prefix", "--kind", "--batch-size", "--existing"]),
        ("tags", ["--prepend", "--remove-regex", "--replace", "--filter", "--list", "--dedupe"]),
        ("doctor", ["--json", "--resolution", "--bucket-reso-steps", "--skip-bad-images"]),
    ],
)
def test_command_help(command: str, options: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in options)


@pytest.mark.slow
def test_unwritable_output_is_one_line_error(tmp_path: Path, run_cli) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.new("RGB", (64, 64)).save(source / "a.png")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    result = run_cli("crop", source, "--out", blocker, "--size", "32")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "not-a-folder" in result.stderr
