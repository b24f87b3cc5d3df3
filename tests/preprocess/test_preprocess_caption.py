"""BLIP captioning end to end with a tiny randomly initialised model of the real class."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from library.data.captions import read_caption
from preprocess.caption import decorate
from preprocess.captioners import CAPTIONERS, GenerationSettings

SETTINGS = GenerationSettings(max_length=8, min_length=3)


def test_blip_captioner_returns_one_text_per_image(blip_model: Path) -> None:
    captioner = CAPTIONERS["blip"](blip_model, SETTINGS)
    images = [Image.new("RGB", (50, 40), (200, 30, 30)), Image.new("RGB", (30, 60), (30, 30, 200))]
    texts = captioner(images)
    assert len(texts) == 2
    assert all(text and "[" not in text for text in texts)  # special tokens are stripped


def test_decorate() -> None:
    assert decorate("a dog on grass", "sks dog", "") == "sks dog, a dog on grass"
    assert decorate("a dog", " ", "photo") == "a dog, photo"


@pytest.mark.slow
def test_caption_cli_subprocess(tmp_path: Path, blip_model: Path, run_cli, samples) -> None:
    source = tmp_path / "src" / "3_sks dog"
    source.mkdir(parents=True)
    samples.shapes_image((64, 48), seed=1).save(source / "one.png")
    samples.shapes_image((48, 64), seed=2).save(source / "两个.jpg")
    (source / "old.txt").write_text("kept caption", encoding="utf-8")
    samples.shapes_image((40, 40), seed=3).save(source / "old.png")
    samples.truncated_jpeg(source / "broken.jpg")
    out = tmp_path / "out"
    result = run_cli(
        "caption",
        source.parent,
        "--out",
        out,
        "--model",
        blip_model,
        "--prefix",
        "sks dog",
        "--max-length",
        "8",
        "--min-length",
        "3",
        "--batch-size",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "broken.jpg" in result.stdout
    expected = CAPTIONERS["blip"](blip_model, SETTINGS)(
        [Image.open(source / "one.png").convert("RGB"), Image.open(source / "两个.jpg").convert("RGB")]
    )
    written = out / "3_sks dog"
    assert read_caption(written / "one.txt") == f"sks dog, {expected[0]}"
    assert read_caption(written / "两个.txt") == f"sks dog, {expected[1]}"
    assert read_caption(written / "old.txt") == "kept caption"
    assert {path.name for path in written.iterdir()} == {
        "one.png",
        "one.txt",
        "两个.jpg",
        "两个.txt",
        "old.png",
        "old.txt",
    }


@pytest.mark.slow
def test_missing_model_folder_says_what_to_download(tmp_path: Path, run_cli) -> None:
    (tmp_path / "data").mkdir()
    result = run_cli("caption", tmp_path / "data", "--in-place", "--model", tmp_path / "blip-large")
    assert result.returncode == 2
    assert "config.json" in result.stderr and "blip" in result.stderr.lower()
    assert str(tmp_path / "blip-large") in result.stderr
    assert "Traceback" not in result.stderr
