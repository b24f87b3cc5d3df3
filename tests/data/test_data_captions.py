"""Caption reading rules (BOM, newlines, encoding errors) and tag helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from library.data.captions import (
    CaptionError,
    caption_path,
    join_tags,
    read_caption,
    read_caption_for,
    split_tags,
    tag_frequencies,
)


def test_caption_path_uses_same_stem(tmp_path: Path) -> None:
    assert caption_path(tmp_path / "a.b.png") == tmp_path / "a.b.txt"
    assert caption_path(tmp_path / "x.jpg", "caption") == tmp_path / "x.caption"
    assert caption_path(tmp_path / "x.jpg", ".caption") == tmp_path / "x.caption"


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_utf8_with_or_without_bom(tmp_path: Path, bom: bytes) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(bom + "  sks dog, 草地, café \n".encode())
    assert read_caption(path) == "sks dog, 草地, café"


def test_lines_joined_with_comma(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"1girl\r\n\r\n  solo \nsmile\n")
    assert read_caption(path) == "1girl, solo, smile"


def test_invalid_utf8_raises_with_path(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(CaptionError) as caught:
        read_caption(path)
    assert caught.value.path == path
    assert "UTF-8" in str(caught.value)


def test_read_caption_for_missing_is_none(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    assert read_caption_for(image) is None
    caption_path(image).write_text("x, y", encoding="utf-8")
    assert read_caption_for(image) == "x, y"


def test_split_join_and_frequencies() -> None:
    tags = split_tags(" a, b ,, c,a ,")
    assert tags == ["a", "b", "c", "a"]
    assert join_tags(tags) == "a, b, c, a"
    counts = tag_frequencies(["a, b, a", "b, c", ""])
    assert counts == {"a": 1, "b": 2, "c": 1}
