"""Caption edits from the dataset browser: one caption typed in the page, or a bulk tag action over a folder run
through the preprocess `tags` command's own edits, each written atomically and kept for undo.

The undo history lives in the server's memory, one stack per dataset folder (the last `UNDO_DEPTH` edits): an undo
puts back the exact bytes each file held, or removes a caption file the edit created. It refuses when a file was
changed since by something else, rather than overwrite that change.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from library.atomic_files import write_bytes_atomic, write_text_atomic
from library.data.captions import caption_path, join_tags, parse_caption_text
from preprocess.common import Summary
from preprocess.tags import TagEdits, caption_changes

UNDO_DEPTH = 50
BULK_ACTIONS = ("rename", "remove", "prepend")


class EditRefused(ValueError):
    """Nothing to undo, an undo over a file changed since, or a bulk action missing its tag; one line."""


@dataclass(frozen=True)
class _Write:
    file: Path
    before: bytes | None   # None: the edit created the file
    after: bytes


@dataclass(frozen=True)
class _Edit:
    label: str
    writes: tuple[_Write, ...]


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def bulk_edits(action: str, tag: str, new: str = "") -> TagEdits:
    """The `tags` command's edits for one bulk action: rename TAG to NEW, remove TAG, prepend TAG (a trigger)."""
    tag, new = tag.strip(), new.strip()
    if not tag or "," in tag or "," in new:
        raise EditRefused(f"{action}: give one tag (no commas)")
    if action == "rename":
        if not new:
            raise EditRefused("rename: give the new name of the tag")
        return TagEdits(replace={tag: new})
    if action == "remove":
        return TagEdits(remove=frozenset({tag}))
    if action == "prepend":
        return TagEdits(prepend=[tag])
    raise EditRefused(f"{action}: not a bulk action ({', '.join(BULK_ACTIONS)})")


class CaptionHistory:
    """Writes caption files and remembers, per dataset folder, what they held before."""

    def __init__(self, depth: int = UNDO_DEPTH) -> None:
        self._depth = depth
        self._stacks: dict[Path, deque[_Edit]] = {}
        self._lock = threading.Lock()

    def depth(self, dataset: Path) -> int:
        """How many edits of ``dataset`` can be undone."""
        return len(self._stacks.get(dataset, ()))

    def _apply(self, dataset: Path, label: str, texts: dict[Path, str]) -> int:
        """Write each caption file's new text and push one undo entry for all of them; returns files changed."""
        writes = []
        try:
            for file, text in texts.items():
                before, after = _read(file), text.encode("utf-8")
                if before != after:
                    write_text_atomic(file, text)
                    writes.append(_Write(file, before, after))
        finally:  # a write that fails midway leaves the files written so far undoable
            if writes:
                self._stacks.setdefault(dataset, deque(maxlen=self._depth)).append(_Edit(label, tuple(writes)))
        return len(writes)

    def save_caption(self, dataset: Path, image: Path, caption: str, extension: str) -> str:
        """Write ``caption`` (normalised as the pipeline reads it) to the image's caption file; returns it."""
        text = parse_caption_text(caption)
        with self._lock:
            self._apply(dataset, f"caption of {image.name}", {caption_path(image, extension): text})
        return text

    def bulk(self, dataset: Path, edits: TagEdits, label: str, extension: str) -> tuple[int, list[str]]:
        """Apply ``edits`` to every caption under ``dataset``; returns the files changed and the problems
        (unreadable captions, left as they are)."""
        summary = Summary("tags")
        with self._lock:
            texts = {change.caption_file: join_tags(change.after)
                     for change in caption_changes(dataset, extension, edits, [], summary)
                     if change.after != change.before}
            changed = self._apply(dataset, label, texts)
        return changed, [f"{path}: {reason}" for path, reason in summary.problems]

    def undo(self, dataset: Path) -> tuple[str, int]:
        """Put back what the last edit of ``dataset`` changed; returns its label and the files restored."""
        with self._lock:
            stack = self._stacks.get(dataset)
            if not stack:
                raise EditRefused("nothing to undo in this dataset (edits are remembered until the server restarts)")
            edit = stack[-1]
            for write in edit.writes:
                if _read(write.file) != write.after:
                    raise EditRefused(f"{write.file.name} was changed since '{edit.label}'; not undone")
            for write in edit.writes:
                if write.before is None:
                    write.file.unlink(missing_ok=True)
                else:
                    write_bytes_atomic(write.file, write.before)
            stack.pop()
        return edit.label, len(edit.writes)
