"""tags: bulk edits in their documented order, filters, frequencies, output folders."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PIL import Image

from library.data.captions import read_caption
from preprocess.__main__ import main
from preprocess.tags import TagEdits, describe_change


def _edits(**overrides) -> TagEdits:
    values = dict(
        replace=[], replace_regex=[], remove=[], remove_regex=[], dedupe=False, sort=False, add=[], prepend=[]
    )
    return TagEdits.from_args(argparse.Namespace(**{**values, **overrides}))


def test_edit_order_and_operations() -> None:
    tags = ["smile", "long_hair", "blue eyes", "smile", "sks", "red eyes", "solo"]
    edits = _edits(
        replace=[["long_hair", "long hair"]],
        replace_regex=[[r"^(\w+) eyes$", r"\1_eyes"]],
        remove=["solo"],
        remove_regex=[r"red_.*"],
        dedupe=True,
        sort=True,
        add=["smile", "new tag"],
        prepend=["sks"],
    )
    assert edits.apply(tags) == ["sks", "blue_eyes", "long hair", "smile", "new tag"]


def test_regex_replacement_to_empty_drops_tag() -> None:
    assert _edits(replace_regex=[["^watermark$", ""]]).apply(["a", "watermark", "b"]) == ["a", "b"]


def test_describe_change() -> None:
    assert describe_change(["a", "b"], ["b", "c"]) == "-'a' +'c'"
    assert describe_change(["a", "b"], ["b", "a"]) == "(reordered)"
    assert describe_change(["a", "a"], ["a"]) == "(duplicates removed)"


def _dataset(root: Path) -> Path:
    folder = root / "2_char"
    folder.mkdir(parents=True)
    captions = {"one": "1girl, smile, solo", "two": "1boy, smile", "三": "1girl, hat, hat"}
    for stem, caption in captions.items():
        Image.new("RGB", (8, 8)).save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(caption, encoding="utf-8")
    Image.new("RGB", (8, 8)).save(folder / "bare.png")
    return folder


@pytest.mark.slow
def test_tags_cli_subprocess_filter_and_prepend(tmp_path: Path, run_cli) -> None:
    folder = _dataset(tmp_path / "src")
    out = tmp_path / "out"
    result = run_cli(
        "tags", folder.parent, "--out", out, "--filter", "1girl", "--prepend", "sks", "--dedupe", "--remove", "solo"
    )
    assert result.returncode == 0, result.stderr
    edited = out / "2_char"
    assert read_caption(edited / "one.txt") == "sks, 1girl, smile"
    assert read_caption(edited / "三.txt") == "sks, 1girl, hat"
    assert read_caption(edited / "two.txt") == "1boy, smile"  # filtered out, copied unchanged
    assert not (edited / "bare.txt").exists()
    assert {path.name for path in edited.glob("*.png")} == {"one.png", "two.png", "三.png", "bare.png"}
    assert "one.txt: -'solo' +'sks'" in result.stdout
    assert read_caption(folder / "one.txt") == "1girl, smile, solo"  # source untouched


def test_in_place_add_creates_missing_caption(tmp_path: Path) -> None:
    folder = _dataset(tmp_path)
    assert main(["tags", str(folder), "--in-place", "--add", "trigger"]) == 0
    assert read_caption(folder / "bare.txt") == "trigger"
    assert read_caption(folder / "two.txt") == "1boy, smile, trigger"


def test_list_frequencies_without_writing(tmp_path: Path, capsys) -> None:
    folder = _dataset(tmp_path)
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert main(["tags", str(folder), "--list"]) == 0
    output = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in output.splitlines() if line.startswith("  ") and "%" in line}
    assert lines["smile"][0] == "2" and lines["1girl"][0] == "2" and lines["hat"][0] == "1"
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_dry_run_and_usage_errors(tmp_path: Path, capsys) -> None:
    folder = _dataset(tmp_path)
    assert main(["tags", str(folder), "--in-place", "--dry-run", "--prepend", "x"]) == 0
    assert read_caption(folder / "one.txt") == "1girl, smile, solo"
    assert "one.txt: +'x'" in capsys.readouterr().out
    assert main(["tags", str(folder), "--prepend", "x"]) == 2
    assert main(["tags", str(folder), "--in-place", "--remove-regex", "(unclosed"]) == 2
    assert "bad regular expression" in capsys.readouterr().err
