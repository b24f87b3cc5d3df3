"""Per-step caption processing (sd-scripts semantics) and captions found at scan time."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from pipeline_fixtures import run_config, write_images

from library.data.caption_process import process_caption
from library.data.dataset_config import SubsetBlueprint
from library.data.pipeline import build_training_data
from library.data.records import DatasetError

CAPTION = "sks dog, grass, sky, tree, ball"


def subset(**options: object) -> SubsetBlueprint:
    return SubsetBlueprint(image_dir=Path("."), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("caption", "options", "expected"),
    [
        (CAPTION, {}, CAPTION),
        (CAPTION, {"caption_dropout_rate": 0.0, "caption_tag_dropout_rate": 0.0}, CAPTION),
        (CAPTION, {"caption_prefix": "photo of", "caption_suffix": "4k"}, f"photo of {CAPTION} 4k"),
        (CAPTION, {"caption_dropout_rate": 1.0}, ""),
        (CAPTION, {"caption_tag_dropout_rate": 1.0, "keep_tokens": 2}, "sks dog, grass"),
        (CAPTION, {"caption_tag_dropout_rate": 1.0}, ""),
        ("sks, dog ||| grass, sky ||| masterpiece", {"keep_tokens_separator": "|||", "caption_tag_dropout_rate": 1.0},
         "sks, dog, masterpiece"),
        ("a ||| b, c", {"keep_tokens_separator": "|||"}, "a, b, c"),
        ("no separator here", {"keep_tokens_separator": "|||", "shuffle_caption": True}, "no separator here"),
    ],
)
def test_caption_table(caption: str, options: dict, expected: str) -> None:
    assert process_caption(caption, subset(**options), random.Random(0)) == expected


def orders(caption: str, options: dict, seeds: int = 30) -> list[list[str]]:
    return [process_caption(caption, subset(**options), random.Random(seed)).split(", ") for seed in range(seeds)]


def test_shuffle_keeps_leading_tokens_in_place() -> None:
    results = orders(CAPTION, {"shuffle_caption": True, "keep_tokens": 1})
    tags = CAPTION.split(", ")
    assert all(order[0] == "sks dog" and sorted(order) == sorted(tags) for order in results)
    assert len({tuple(order) for order in results}) > 5


def test_shuffle_with_separator_keeps_head_and_tail() -> None:
    caption = "sks, dog ||| a, b, c, d ||| best quality"
    results = orders(caption, {"shuffle_caption": True, "keep_tokens_separator": "|||", "keep_tokens": 4})
    for order in results:
        assert order[:2] == ["sks", "dog"] and order[-1] == "best quality"
        assert sorted(order[2:-1]) == ["a", "b", "c", "d"]
    assert len({tuple(order) for order in results}) > 5


def test_prefix_joins_first_tag_before_keep_tokens() -> None:
    results = orders("dog, grass, sky", {"caption_prefix": "sks", "shuffle_caption": True, "keep_tokens": 1})
    assert all(order[0] == "sks dog" for order in results)


def test_tag_dropout_rate_drops_about_that_share() -> None:
    results = orders(", ".join(f"t{i}" for i in range(50)), {"caption_tag_dropout_rate": 0.3}, seeds=20)
    kept = sum(len(order) for order in results) / (20 * 50)
    assert 0.6 < kept < 0.8


def test_dropout_every_n_epochs_counts_epochs_from_zero() -> None:
    options = subset(caption_dropout_every_n_epochs=2)
    got = [process_caption(CAPTION, options, random.Random(0), epoch) for epoch in range(4)]
    assert got == [CAPTION, "", CAPTION, ""]


def test_without_rng_caption_is_fixed() -> None:
    options = subset(shuffle_caption=True, caption_dropout_rate=1.0, caption_tag_dropout_rate=1.0, keep_tokens=1,
                     caption_prefix="pre")
    assert process_caption(CAPTION, options) == f"pre {CAPTION}"


def test_missing_captions_use_class_tokens_and_are_reported_once(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "train" / "2_sks cat"
    write_images(folder, [(64, 64)] * 4, captions=["a cat, sofa", None, None, ""])
    write_images(tmp_path / "train" / "plain", [(64, 64)] * 2, captions=[None, None])
    with caplog.at_level(logging.INFO, logger="library.data.records"):
        data = build_training_data(run_config(train_data_dir=tmp_path / "train"))
    captions = {(r.path.parent.name, r.path.name): (r.caption, r.has_caption) for r in data.train_records}
    assert captions[("2_sks cat", "img_0.png")] == ("a cat, sofa", True)
    assert captions[("2_sks cat", "img_1.png")] == ("sks cat", False)
    assert captions[("2_sks cat", "img_3.png")] == ("sks cat", False)  # empty caption file
    assert captions[("plain", "img_0.png")] == ("", False)
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "2_sks cat" in m]) == 1
    assert any("3 of 4 image(s) have no .txt caption" in m and "'sks cat'" in m for m in messages)
    assert any("plain" in m and "empty caption" in m for m in messages)


def test_caption_extension_is_configurable(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "1_x"
    write_images(folder, [(64, 64)], captions=["from .caption file"], extension=".caption")
    (folder / "img_0.txt").write_text("from .txt file", encoding="utf-8")
    data = build_training_data(run_config(train_data_dir=tmp_path / "train", caption_extension="caption"))
    assert data.train_records[0].caption == "from .caption file"


def test_unreadable_caption_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "1_x"
    write_images(folder, [(64, 64)])
    (folder / "img_0.txt").write_bytes(b"caf\xe9 latin-1")
    with pytest.raises(DatasetError) as caught:
        build_training_data(run_config(train_data_dir=tmp_path / "train"))
    assert str(folder / "img_0.txt") in str(caught.value) and "UTF-8" in str(caught.value)
