"""What a user sees of a program that refused a hostile input, and what must stay as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (symlinks not followed) by relative path -> SHA-256 of its bytes."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_unchanged(before: dict[str, str], root: Path) -> None:
    """Each file ``before`` listed is still under ``root`` with the same bytes."""
    after = snapshot(root)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"earlier files changed or removed: {changed}"


def assert_one_line_user_error(stderr: str, *names: str) -> str:
    """The program said one line, naming each of ``names``, and no traceback; the line is returned."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr[-3000:]
    assert all(name in lines[0] for name in names), lines[0]
    return lines[0]
