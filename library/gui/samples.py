"""A run's pictures as the run page's gallery shows them: previews grouped by the step they were rendered at, each
with the prompt, seed and settings read from the PNG's A1111 ``parameters`` chunk (the sample event's prompt when a
file has none), and the compare grid when the run wrote one.

The step, the prompt and the file come from the run's ``sample`` and ``compare`` events, never from file names.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from library.sampling.infotext import PARAMETERS_KEY, read_a1111_parameters


def gallery(folder: Path, events: list[dict]) -> dict:
    """``{"steps": [{"step", "images": [{"path", "prompt", "seed", ...}]}], "compare": path or None}``, paths
    relative to the run's folder; files gone since (pruned, deleted) are left out."""
    steps: dict[int, list[dict]] = {}
    compare = None
    for event in events:
        kind, path = event.get("event"), _inside(folder, event.get("file"))
        if path is None:
            continue
        if kind == "sample":
            image = {"prompt": event.get("prompt", ""), **_parameters(folder / path), "path": str(path)}
            steps.setdefault(int(event.get("step", 0)), []).append(image)
        elif kind == "compare":
            compare = str(path)
    return {"steps": [{"step": step, "images": images} for step, images in sorted(steps.items())],
            "compare": compare}


def _inside(folder: Path, file: str | None) -> Path | None:
    """`file` (as an event names it) relative to the run's folder, when it is an existing file inside it."""
    if not file:
        return None
    path = Path(file)
    try:
        relative = path.relative_to(folder) if path.is_absolute() else path
    except ValueError:
        return None
    target = folder / relative
    return relative if target.is_file() and target.resolve().is_relative_to(folder.resolve()) else None


def _parameters(path: Path) -> dict[str, str]:
    stat = path.stat()
    return _read_parameters(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4096)
def _read_parameters(path: Path, mtime_ns: int, size: int) -> dict[str, str]:
    """The PNG's ``parameters`` fields (keyed by mtime and size: a rewritten file is read again); the chunk sits
    before the pixels, so the picture is never decoded."""
    try:
        with Image.open(path) as image:
            text = image.info.get(PARAMETERS_KEY)
    except (OSError, UnidentifiedImageError):
        return {}
    return read_a1111_parameters(text) if isinstance(text, str) else {}
