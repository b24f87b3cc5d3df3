"""Which base-model families a weights strategy can train.

LoRA trains both denoiser kinds (a UNet, FLUX.1's transformer); full fine-tuning, textual inversion and
hypernetworks are built for UNet denoisers. A run that asks a strategy for a family it cannot train stops here
with one line, before anything is estimated or loaded, instead of failing deep in the loop.
"""

from __future__ import annotations

from pathlib import Path

from library.config import FurnaceConfig
from library.models.families import get_family
from library.models.sizes import read_model_sizes
from library.training.exceptions import TrainingSetupError
from library.training.weights import WeightsFactory


def check_trainable_family(config: FurnaceConfig, weights_factory: WeightsFactory) -> None:
    """Refuse a family whose denoiser the strategy cannot train; an unreadable model is left for the loader."""
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
    if family.denoiser not in weights_factory.trainable_denoisers:
        raise TrainingSetupError(
            f"model.pretrained_model_name_or_path: a {family.title} model; {weights_factory.title} of its "
            f"{family.denoiser} is not supported yet (Stable Diffusion 1.x, 2.x and XL bases train; a "
            f"{family.title} base trains a LoRA with train_network.py or dreambooth.train_method = \"lora\")"
        )
