"""WD14 tagging end to end on a tiny ONNX model with the real input/output layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from library.data.captions import read_caption, split_tags
from preprocess.__main__ import main
from preprocess.wd14 import TagSettings, WD14Tagger, prepare_image, select_tags

RED, BLUE = (255, 0, 0), (0, 0, 255)
RED_SQUARE = Image.new("RGB", (300, 300), RED)
RED_WIDE = Image.new("RGB", (600, 300), RED)
BLUE_SQUARE = Image.new("RGB", (100, 100), BLUE)


def _tags(tagger: WD14Tagger, image: Image.Image, **settings) -> list[str]:
    return select_tags(tagger.predict([image])[0], tagger.table, TagSettings(**settings))


def test_prepare_image_pads_white_square_bgr() -> None:
    array = prepare_image(RED_WIDE, 448)
    assert array.shape == (448, 448, 3) and array.dtype == np.float32
    assert array[5, 224].tolist() == [255.0, 255.0, 255.0]  # padding above the wide image
    assert array[224, 224].tolist() == [0.0, 0.0, 255.0]  # red in B, G, R order
    assert array.max() <= 255.0 and array.min() >= 0.0


def test_model_input_size_and_default_thresholds(wd14_model: Path) -> None:
    tagger = WD14Tagger(wd14_model)
    assert tagger.size == 448
    assert _tags(tagger, RED_SQUARE) == ["hatsune miku", "red theme", "^_^", "1girl", "long hair", "smile"]


def test_preprocessing_seen_by_model(wd14_model: Path) -> None:
    tagger = WD14Tagger(wd14_model)
    assert "blue theme" in _tags(tagger, BLUE_SQUARE) and "red theme" not in _tags(tagger, BLUE_SQUARE)
    assert "white background" in _tags(tagger, RED_WIDE)
    assert "white background" not in _tags(tagger, RED_SQUARE)


def test_thresholds_rating_undesired_underscores_max(wd14_model: Path) -> None:
    tagger = WD14Tagger(wd14_model)
    assert _tags(tagger, RED_SQUARE, character_threshold=0.75)[:2] == ["hatsune miku", "kagamine rin"]
    assert _tags(tagger, RED_SQUARE, general_threshold=0.55) == ["hatsune miku", "red theme", "^_^", "1girl"]
    assert _tags(tagger, RED_SQUARE, include_rating=True)[0] == "general"
    unwanted = _tags(tagger, RED_SQUARE, undesired=frozenset({"long hair", "smile", "hatsune_miku"}))
    assert unwanted == ["red theme", "^_^", "1girl"]
    assert _tags(tagger, RED_SQUARE, keep_underscores=True)[:4] == ["hatsune_miku", "red_theme", "^_^", "1girl"]
    assert _tags(tagger, RED_SQUARE, max_tags=3) == ["hatsune miku", "red theme", "^_^"]


def _dataset(root: Path, samples) -> Path:
    folder = root / "5_test"
    folder.mkdir(parents=True)
    RED_SQUARE.save(folder / "red.png")
    BLUE_SQUARE.save(folder / "blue.png")
    (folder / "blue.txt").write_text("old tag, blue theme", encoding="utf-8")
    RED_WIDE.save(folder / "宽图.png")
    samples.zero_byte(folder / "empty.png")
    return root / "5_test"


@pytest.mark.slow
def test_tag_cli_subprocess(tmp_path: Path, wd14_model: Path, run_cli, samples) -> None:
    source = _dataset(tmp_path / "src", samples)
    out = tmp_path / "out"
    result = run_cli(
        "tag", source.parent, "--out", out, "--model", wd14_model, "--batch-size", "2", "--existing", "append"
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "empty.png" in result.stdout and "empty file" in result.stdout
    tagged = out / "5_test"
    assert split_tags(read_caption(tagged / "blue.txt"))[:3] == ["old tag", "blue theme", "hatsune miku"]
    assert "white background" in split_tags(read_caption(tagged / "宽图.txt"))
    assert read_caption(tagged / "red.txt").startswith("hatsune miku, red theme")
    assert Image.open(tagged / "red.png").size == (300, 300)
    assert read_caption(source / "blue.txt") == "old tag, blue theme"  # source untouched
    assert not (source / "red.txt").exists()
    frequency_lines = result.stdout.split("top tags over 3 captions:")[1].splitlines()
    assert any(line.split()[:2] == ["hatsune", "miku"] and "100.0%" in line for line in frequency_lines)


def test_existing_skip_in_place(tmp_path: Path, wd14_model: Path, capsys, samples) -> None:
    source = _dataset(tmp_path, samples)
    assert main(["tag", str(source), "--in-place", "--model", str(wd14_model), "--existing", "skip"]) == 0
    assert read_caption(source / "blue.txt") == "old tag, blue theme"
    assert read_caption(source / "red.txt").startswith("hatsune miku, red theme")
    assert "skipped (caption exists): 1" in capsys.readouterr().out


def test_existing_overwrite_in_place(tmp_path: Path, wd14_model: Path, samples) -> None:
    source = _dataset(tmp_path, samples)
    assert main(["tag", str(source), "--in-place", "--model", str(wd14_model), "--existing", "overwrite"]) == 0
    assert read_caption(source / "blue.txt").startswith("hatsune miku, blue theme")
    assert "old tag" not in read_caption(source / "blue.txt")


def test_dry_run_writes_nothing(tmp_path: Path, wd14_model: Path, samples) -> None:
    source = _dataset(tmp_path, samples)
    assert main(["tag", str(source), "--in-place", "--dry-run", "--model", str(wd14_model)]) == 0
    assert sorted(path.name for path in source.iterdir()) == [
        "blue.png",
        "blue.txt",
        "empty.png",
        "red.png",
        "宽图.png",
    ]


@pytest.mark.slow
def test_missing_model_names_files_and_folder(tmp_path: Path, run_cli, samples) -> None:
    source = _dataset(tmp_path / "src", samples)
    result = run_cli("tag", source, "--in-place", "--model", tmp_path / "no-model")
    assert result.returncode == 2
    assert "model.onnx" in result.stderr and "selected_tags.csv" in result.stderr
    assert str(tmp_path / "no-model") in result.stderr
    assert "Traceback" not in result.stderr


def test_mismatched_tag_list_is_reported(tmp_path: Path, wd14_model: Path, capsys) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.onnx").write_bytes((wd14_model / "model.onnx").read_bytes())
    rows = (wd14_model / "selected_tags.csv").read_text(encoding="utf-8").splitlines()
    (model / "selected_tags.csv").write_text("\n".join(rows[:-1]) + "\n", encoding="utf-8")
    (tmp_path / "data").mkdir()
    assert main(["tag", str(tmp_path / "data"), "--in-place", "--model", str(model)]) == 2
    error = capsys.readouterr().err
    assert f"predicts {len(rows) - 1} tags" in error and f"lists {len(rows) - 2}" in error
