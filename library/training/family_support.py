"""Which base-model families the training loop can train.

The loop, the noise and loss code, the LoRA targets and the memory estimate are built for UNet denoisers. A DiT
family (FLUX.1) already loads, converts and sizes through ``library/models``; until its training lands, a run on
one stops here with one line, before anything is estimated or loaded, instead of failing deep in the loop.
"""

from __future__ import annotations

from pathlib import Path

from library.config import FurnaceConfig
from library.models.families import get_family
from library.models.sizes import read_model_sizes
from library.training.exceptions import TrainingSetupError

TRAINABLE_DENOISERS = ("unet",)


def check_trainable_family(config: FurnaceConfig) -> None:
    """Refuse a family whose denoiser the loop cannot train; an unreadable model is left for the loader to report."""
    section = config.model
    if section.family != "auto":
        family = get_family(section.family)
    else:
        try:
            family = read_model_sizes(
                Path(section.pretrained_model_name_or_path), section.family, section.split_files()
            ).family
        except ValueError:
            return
    if family.denoiser not in TRAINABLE_DENOISERS:
        raise TrainingSetupError(
            f"model.pretrained_model_name_or_path: a {family.title} model; training its {family.denoiser} is not "
            "supported yet (Stable Diffusion 1.x, 2.x and XL bases train)"
        )
