"""Where preview images go and how they are written.

Names are ``<output_name>_<step:06d>_<index:02d>_<seed>.png`` under ``<output_dir>/sample/``: they sort by step,
then by prompt index, and carry the seed so a picture can be re-rendered. Unlike sd-scripts there is no timestamp,
so re-sampling the same step (e.g. after a resume) replaces its pictures instead of piling up copies.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from library.atomic_files import atomic_write

SAMPLE_DIR_NAME = "sample"


def sample_path(output_dir: str | Path, output_name: str, step: int, index: int, seed: int) -> Path:
    """The file a preview of prompt ``index`` rendered at ``step`` is saved to."""
    return Path(output_dir) / SAMPLE_DIR_NAME / f"{output_name}_{step:06d}_{index:02d}_{seed}.png"


def save_png_atomic(image: Image.Image, path: Path) -> Path:
    """Write ``image`` as PNG atomically (a reader never sees half a file), creating its folder."""
    with atomic_write(path) as handle:
        image.save(handle, format="PNG")
    return path
