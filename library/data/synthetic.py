"""A generated dataset of mixed image sizes for mechanics tests and benchmarks: drawn images of one concept.

The concept (``frnc``) is a red disc on varied backgrounds, drawn with Pillow from a seed, so the same seed gives
the same pictures; sizes vary in aspect ratio to exercise bucketing. What a run *learns* is measured on the toy
world instead (:mod:`library.toyworld`), whose pictures a judge can read.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from library.data.repeat_folders import repeat_folder_name

TRIGGER = "frnc"
_BACKGROUNDS = {
    "blue": (40, 70, 200),
    "green": (40, 160, 70),
    "white": (235, 235, 235),
    "black": (20, 20, 20),
    "yellow": (230, 210, 60),
    "purple": (120, 50, 160),
}
_SIZES = ((96, 96), (128, 96), (96, 128), (112, 112))


def draw_concept(rng: random.Random, size: tuple[int, int], background: str) -> Image.Image:
    """One picture of the concept: a red disc with a darker rim at a random place and scale."""
    width, height = size
    image = Image.new("RGB", size, _BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    radius = rng.randint(min(size) // 5, min(size) // 3)
    cx = rng.randint(radius, width - radius)
    cy = rng.randint(radius, height - radius)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(220, 30, 30), outline=(120, 0, 0), width=3)
    return image


def write_dataset(out_dir: Path, count: int = 16, repeats: int = 10, seed: int = 0) -> Path:
    """Write ``count`` image/caption pairs into ``out_dir/<repeats>_frnc/`` and return that folder."""
    rng = random.Random(seed)
    concept_dir = out_dir / repeat_folder_name(repeats, TRIGGER)
    concept_dir.mkdir(parents=True, exist_ok=True)
    backgrounds = sorted(_BACKGROUNDS)
    for index in range(count):
        background = backgrounds[index % len(backgrounds)]
        size = _SIZES[index % len(_SIZES)]
        image = draw_concept(rng, size, background)
        stem = concept_dir / f"{TRIGGER}_{index:03d}"
        image.save(stem.with_suffix(".png"))
        stem.with_suffix(".txt").write_text(f"{TRIGGER}, red circle, {background} background\n", encoding="utf-8")
    return concept_dir
