"""Where preview images go and how they are written.

Names are ``<output_name>_<step:06d>_<index:02d>_<seed>.png`` under ``<output_dir>/sample/``: they sort by step,
then by prompt index, and carry the seed so a picture can be re-rendered. Unlike sd-scripts there is no timestamp,
so re-sampling the same step (e.g. after a resume) replaces its pictures instead of piling up copies. A picture
rendered from a prompt carries that prompt's settings as A1111's ``parameters`` text chunk.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from library.atomic_files import atomic_write
from library.sampling.infotext import PARAMETERS_KEY, a1111_parameters
from library.sampling.prompts import SamplePrompt

SAMPLE_DIR_NAME = "sample"


def sample_path(output_dir: str | Path, output_name: str, step: int, index: int, seed: int) -> Path:
    """The file a preview of prompt ``index`` rendered at ``step`` is saved to."""
    return Path(output_dir) / SAMPLE_DIR_NAME / f"{output_name}_{step:06d}_{index:02d}_{seed}.png"


def save_png_atomic(image: Image.Image, path: Path, prompt: SamplePrompt | None = None) -> Path:
    """Write ``image`` as PNG atomically (a reader never sees half a file), creating its folder; when ``prompt``
    rendered it, its settings go into the A1111 ``parameters`` text chunk."""
    info = None
    if prompt is not None:
        info = PngInfo()
        info.add_text(PARAMETERS_KEY, a1111_parameters(prompt))
    with atomic_write(path) as handle:
        image.save(handle, format="PNG", pnginfo=info)
    return path
