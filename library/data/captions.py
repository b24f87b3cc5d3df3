"""Caption files: where they live, how they are read, and how tags are split and counted.

A caption file sits beside its image with the same stem (``dog.png`` -> ``dog.txt``).
Reading rules, shared by the trainer and every preprocessing command:

- UTF-8, with or without a byte-order mark (editors on Windows often add one);
- each line is stripped and blank lines are dropped; several lines are joined with ``", "``,
  so a file listing one tag per line reads as a normal comma-separated tag list;
- bytes that are not UTF-8 raise :class:`CaptionError` naming the file.

Tags are the comma-separated pieces of a caption, stripped, empty pieces dropped.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

DEFAULT_CAPTION_EXTENSION = ".txt"
TAG_SEPARATOR = ", "


class CaptionError(Exception):
    """A caption file that cannot be read; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def caption_path(image_path: str | os.PathLike[str], extension: str = DEFAULT_CAPTION_EXTENSION) -> Path:
    """The caption file that belongs to ``image_path`` (``extension`` with or without the dot)."""
    suffix = extension if extension.startswith(".") else f".{extension}"
    return Path(image_path).with_suffix(suffix)


def parse_caption_text(text: str) -> str:
    """Normalise raw caption text: drop a BOM, strip lines, join non-blank lines with ``", "``."""
    text = text.removeprefix("\ufeff")
    lines = (line.strip() for line in text.splitlines())
    return TAG_SEPARATOR.join(line for line in lines if line)


def read_caption(path: str | os.PathLike[str]) -> str:
    """Read and normalise one caption file (see module doc); raises :class:`CaptionError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CaptionError(path, f"cannot read caption ({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CaptionError(path, f"not valid UTF-8 at byte {error.start}; re-save the file as UTF-8") from None
    return parse_caption_text(text)


def read_caption_for(image_path: str | os.PathLike[str], extension: str = DEFAULT_CAPTION_EXTENSION) -> str | None:
    """The caption of an image, or ``None`` when it has no caption file."""
    path = caption_path(image_path, extension)
    if not path.is_file():
        return None
    return read_caption(path)


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags of a caption, stripped, empty ones dropped, order kept."""
    return [tag for tag in (piece.strip() for piece in caption.split(",")) if tag]


def join_tags(tags: Iterable[str]) -> str:
    """Inverse of :func:`split_tags`."""
    return TAG_SEPARATOR.join(tags)


def tag_frequencies(captions: Iterable[str]) -> Counter[str]:
    """How many captions contain each tag (a tag repeated inside one caption counts once)."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(dict.fromkeys(split_tags(caption), 1))
    return counts
