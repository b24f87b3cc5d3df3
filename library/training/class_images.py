"""Prior preservation needs class images; when the class folder holds fewer than ``num_class_images``, the base
model generates the rest before training. Each image has its own seed (``training.seed`` + its index), so the set is
the same whatever the batch size, and an interrupted generation simply continues on the next run. They are rendered
the way previews are (:func:`library.sampling.preview.generate_images`: the family's pipeline around the loaded
modules, captions encoded as training encodes them), so a flow-matching family (FLUX.1) draws them with its
flow-matching Euler and guidance input, an SD family with ``sample.sampler`` and classifier-free guidance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from library.atomic_files import write_text_atomic
from library.config import FurnaceConfig
from library.data.captions import caption_path
from library.data.images import list_images
from library.models.loader import BaseModel
from library.models.text_encoding import token_lengths
from library.sampling.files import save_png_atomic
from library.sampling.preview import for_family, generate_images
from library.sampling.prompts import SamplePrompt

logger = logging.getLogger(__name__)


def missing_class_indices(folder: Path, wanted: int) -> list[int]:
    """Indices of ``class_NNNNN.png`` still to generate so the folder holds ``wanted`` images."""
    present = list_images(folder) if folder.is_dir() else []
    shortfall = wanted - len(present)
    if shortfall <= 0:
        return []
    names = {path.name for path in present}
    indices: list[int] = []
    index = 0
    while len(indices) < shortfall:
        if f"class_{index:05d}.png" not in names:
            indices.append(index)
        index += 1
    return indices


@torch.no_grad()
def ensure_class_images(config: FurnaceConfig, model: BaseModel, device,
                        report: Callable[[int, int], None] = lambda done, total: None) -> int:
    """Fill ``dreambooth.class_data_dir`` up to ``num_class_images``; returns how many were generated.

    ``report(done, total)`` is called before the first image and after each batch (the run's progress events).
    """
    section = config.dreambooth
    if not section.num_class_images:
        return 0
    folder = Path(section.class_data_dir)
    todo = missing_class_indices(folder, section.num_class_images)
    if not todo:
        logger.info("%s already holds %d or more class images; none generated", folder, section.num_class_images)
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("generating %d class images of %r into %s", len(todo), section.class_prompt, folder)
    for module in (model.unet, model.vae, *model.text_encoders):
        module.to(device)
    width, height = config.dataset.resolution  # fitted to the family's multiple by for_family
    sample = config.sample
    prompts = for_family(model.family, [
        SamplePrompt(section.class_prompt, width=width, height=height, steps=section.class_generation_steps,
                     cfg_scale=sample.cfg_scale, seed=config.training.seed + index, sampler=sample.sampler,
                     guidance_scale=sample.guidance_scale)
        for index in todo
    ])
    lengths = token_lengths(model.family, config.flow_matching.t5xxl_max_token_length)
    batch_size = section.class_generation_batch_size
    report(0, len(todo))
    with tqdm(total=len(todo), desc="class images", unit="image") as bar:
        for start in range(0, len(todo), batch_size):
            batch = prompts[start : start + batch_size]
            images = generate_images(model, batch, clip_skip=config.model.clip_skip, batch_size=batch_size,
                                     token_lengths=lengths)
            for index, settings, image in zip(todo[start : start + batch_size], batch, images):
                target = folder / f"class_{index:05d}.png"
                write_text_atomic(caption_path(target), f"{section.class_prompt}\n")
                save_png_atomic(image, target, settings)
            bar.update(len(batch))
            report(bar.n, len(todo))
    return len(todo)
