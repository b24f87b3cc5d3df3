"""Failed writes to a run's output folder as one line naming the folder and the file, whichever library wrote.

A full disk, a quota and a file-size limit (ENOSPC, EDQUOT, EFBIG) read the same to a user: there is no room. Python
reports them as OSError; safetensors puts the OS error number in its message; torch's zip writer (optimizer and
scheduler states) reports only that a write came up short, which on a working disk means the same lack of room.
Every write is atomic, so what was saved before a failure is still whole.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from library.training.exceptions import OutputError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_OS_ERROR_IN_MESSAGE = re.compile(r"os error (\d+)")
_SHORT_WRITE_MARKS = ("inline_container", "file write failed")


@contextmanager
def reported_write_failures(folder: Path, target: Path, kept: str) -> Iterator[None]:
    """Raise a failed write of ``target`` (in the output folder ``folder``) as an OutputError; ``kept`` says what
    of earlier output is intact. Failures that are not writes pass through unchanged."""
    try:
        yield
    except Exception as error:
        code = _write_errno(error)
        if code is None:
            raise
        raise OutputError(describe(code, folder, target, kept)) from None


def describe(code: int, folder: Path, target: Path, kept: str) -> str:
    """One line: what went wrong, where, and what to do."""
    if code in NO_SPACE:
        return f"no space left on {folder} while saving {target}: {kept}"
    if code in NOT_WRITABLE:
        return (f"cannot write to {folder} ({os.strerror(code)}) while saving {target}: make it writable or choose "
                f"another output.output_dir; {kept}")
    return f"{os.strerror(code)} while saving {target} in {folder}: {kept}"


def _write_errno(error: BaseException) -> int | None:
    """The OS error behind a failed write, or None when ``error`` is not one."""
    if isinstance(error, OSError):
        return error.errno
    message = str(error)
    if found := _OS_ERROR_IN_MESSAGE.search(message):
        return int(found.group(1))
    if isinstance(error, RuntimeError) and any(mark in message for mark in _SHORT_WRITE_MARKS):
        return errno.ENOSPC
    return None
