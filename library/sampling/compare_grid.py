"""The compare grid: weight files (e.g. a run's epochs) x strengths x prompts, at the prompts' fixed seeds.

Rows are (file, prompt) pairs, columns are strengths; every cell is also saved as a single image. How a file is put
into the model at a strength is the caller's: the ``compare`` tool merges it into the base weights, a training run
loads it into its live adapters. Both render through :func:`render_grid`, so their grids look alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from library.sampling.files import save_png_atomic
from library.sampling.grid import make_grid
from library.sampling.preview import LiveModel, generate_images
from library.sampling.prompts import SamplePrompt

GRID_FILE = "compare.png"
SINGLES_DIR = "singles"

LoraApplier = Callable[[Path, float], AbstractContextManager[None]]
"""(weight file, strength) -> a context inside which the model renders with that file at that strength."""


def render_grid(
    model: LiveModel,
    loras: Sequence[Path],
    strengths: Sequence[float],
    prompts: Sequence[SamplePrompt],
    out: Path,
    apply: LoraApplier,
    clip_skip: int = 1,
    autocast_dtype: torch.dtype | None = None,
    batch_size: int = 1,
    token_lengths: Mapping[str, int] | None = None,
) -> tuple[Path, list[Path]]:
    """Render every cell, save the singles and the labelled grid under ``out``; returns (grid path, single paths).

    ``clip_skip``, ``autocast_dtype``, ``batch_size`` and ``token_lengths`` are passed to the sampler as for
    training previews.
    """
    rows: list[list[Image.Image]] = [[] for _ in range(len(loras) * len(prompts))]
    singles: list[Path] = []
    cells = tqdm(total=len(loras) * len(strengths), desc="compare", unit="cell")
    for lora_index, lora in enumerate(loras):
        for strength in strengths:
            with apply(lora, strength):
                images = generate_images(model, prompts, clip_skip=clip_skip, autocast_dtype=autocast_dtype,
                                         batch_size=batch_size, token_lengths=token_lengths)
            for prompt_index, image in enumerate(images):
                rows[lora_index * len(prompts) + prompt_index].append(image)
                name = f"{lora.stem}_s{strength:g}_p{prompt_index:02d}_{prompts[prompt_index].seed}.png"
                singles.append(save_png_atomic(image, out / SINGLES_DIR / name, prompts[prompt_index]))
            cells.update()
    cells.close()
    row_labels = [f"{lora.stem}: {prompt.prompt}" for lora in loras for prompt in prompts]
    grid = make_grid(rows, row_labels=row_labels, column_labels=[f"strength {s:g}" for s in strengths])
    return save_png_atomic(grid, out / GRID_FILE), singles
