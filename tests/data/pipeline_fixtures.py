"""Datasets and run configs written at test time for the data-pipeline tests."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from library.config import FurnaceConfig, loads_config


def write_images(
    folder: Path,
    sizes: Sequence[tuple[int, int]],
    captions: Sequence[str | None] | None = None,
    stem: str = "img",
    extension: str = ".txt",
) -> list[Path]:
    """Distinct noise PNGs ``<stem>_<i>.png`` (+ caption files where the caption is not None)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, size in enumerate(sizes):
        seed = zlib.crc32(f"{folder.name}/{stem}/{index}".encode())
        noise = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"{stem}_{index}.png"
        Image.fromarray(noise).save(path)
        caption = captions[index] if captions is not None else f"{folder.name} photo, tag{index}"
        if caption is not None:
            path.with_suffix(extension).write_text(caption, encoding="utf-8")
        paths.append(path)
    return paths


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return f"'{value}'"
    return repr(value)


def run_config(seed: int = 42, **dataset: object) -> FurnaceConfig:
    """A validated run config with ``[dataset]`` options (small bucket bounds suit the tiny test images)."""
    options: dict[str, object] = {"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 256,
                                  "bucket_reso_steps": 16}
    options.update(dataset)
    lines = "\n".join(f"{key} = {toml_value(value)}" for key, value in options.items())
    model = "[model]\npretrained_model_name_or_path = 'base.safetensors'\n"
    text = f"{model}[training]\nseed = {seed}\n[dataset]\n{lines}\n"
    return loads_config(text, "test.toml")
