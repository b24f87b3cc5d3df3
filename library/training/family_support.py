"""Which base-model families a weights strategy can train, at which image sizes.

LoRA trains both denoiser kinds (a UNet, FLUX.1's transformer); full fine-tuning, textual inversion and
hypernetworks are built for UNet denoisers. A run that asks a strategy for a family it cannot train, or for image
sides the family cannot take (FLUX.1 packs 2x2 latents: multiples of 16 pixels), stops here with one line, before
anything is estimated or loaded, instead of failing deep in the loop.
"""

from __future__ import annotations

from pathlib import Path

from library.config import FurnaceConfig
from library.data.dataset_config import blueprints_from_config
from library.models.families import ModelFamily, get_family
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
    check_sizes(config, family)
    if family.denoiser not in weights_factory.trainable_denoisers:
        raise TrainingSetupError(
            f"model.pretrained_model_name_or_path: a {family.title} model; {weights_factory.title} of its "
            f"{family.denoiser} is not supported yet (Stable Diffusion 1.x, 2.x and XL bases train; a "
            f"{family.title} base trains a LoRA with train_network.py or dreambooth.train_method = \"lora\")"
        )


def check_sizes(config: FurnaceConfig, family: ModelFamily) -> None:
    """Refuse a training size or bucket step that is not a multiple of the family's ``resolution_multiple``."""
    multiple = family.resolution_multiple
    section = config.dataset
    datasets = blueprints_from_config(section) if section.dataset_config else [section]
    for index, dataset in enumerate(datasets):
        where = f"{section.dataset_config}: datasets[{index}]." if section.dataset_config else "dataset."
        if dataset.enable_bucket and dataset.bucket_reso_steps % multiple:
            key, value, fitting = "bucket_reso_steps", dataset.bucket_reso_steps, _round_up(dataset.bucket_reso_steps,
                                                                                           multiple)
        elif not dataset.enable_bucket and any(side % multiple for side in dataset.resolution):
            key, value = "resolution", list(dataset.resolution)
            fitting = [_round_up(side, multiple) for side in dataset.resolution]
        else:
            continue
        raise TrainingSetupError(
            f"{where}{key}: a {family.title} model needs image sides in multiples of {multiple} pixels (got "
            f"{value}); use {fitting}"
        )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
