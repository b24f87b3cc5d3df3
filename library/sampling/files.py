"""Where preview images go and how they are written.

Names are ``<output_name>_<step:06d>_<index:02d>_<seed>.png`` under ``<output_dir>/sample/``: they sort by step,
then by prompt index, and carry the seed so a picture can be re-rendered. Unlike sd-scripts there is no timestamp,
so re-sampling the same step (e.g. after a resume) replaces its pictures instead of piling up copies.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

SAMPLE_DIR_NAME = "sample"


def sample_path(output_dir: str | Path, output_name: str, step: int, index: int, seed: int) -> Path:
    """The file a preview of prompt ``index`` rendered at ``step`` is saved to."""
    return Path(output_dir) / SAMPLE_DIR_NAME / f"{output_name}_{step:06d}_{index:02d}_{seed}.png"


def save_png_atomic(image: Image.Image, path: Path) -> Path:
    """Write ``image`` as PNG through ``<path>.tmp`` and ``os.replace``: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as handle:
            image.save(handle, format="PNG")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
