"""Which base-model families a weights strategy can train, with which adapter options.

LoRA and full fine-tuning train both denoiser kinds (a UNet, FLUX.1's transformer); textual inversion and
hypernetworks are built for UNet denoisers. A run that asks a strategy for a family it cannot train, for blocks the
model does not have (``network.train_*_block_indices``) or for an adapter the family's LoRA files cannot hold (LoKr
in FLUX.1's fused BFL layout) stops here with one line, before anything is estimated or loaded, instead of failing
deep in the loop. (Image sides are fitted to the family's ``resolution_multiple`` by the buckets: ``data/buckets.py``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from library.config import FurnaceConfig
from library.config.block_selection import parse_block_indices
from library.models.families import ModelFamily, get_family
from library.models.sizes import read_model_sizes
from library.training.exceptions import TrainingSetupError
from library.training.weights import WeightsFactory


def check_trainable_family(config: FurnaceConfig, weights_factory: WeightsFactory) -> None:
    """Refuse a family whose denoiser the strategy cannot train; an unreadable model is left for the loader."""
    section = config.model
    sizes = None
    try:
        sizes = read_model_sizes(Path(section.pretrained_model_name_or_path), section.family, section.split_files())
    except ValueError:
        if section.family == "auto":
            return
    family = sizes.family if sizes is not None else get_family(section.family)
    check_network(config, family, sizes.unet_config if sizes is not None else None)
    if family.denoiser not in weights_factory.trainable_denoisers:
        raise TrainingSetupError(
            f"model.pretrained_model_name_or_path: a {family.title} model; {weights_factory.title} of its "
            f"{family.denoiser} is not supported yet (Stable Diffusion 1.x, 2.x and XL bases train; a "
            f"{family.title} base trains a LoRA with train_network.py, or DreamBooth with train_dreambooth.py)"
        )


def check_network(config: FurnaceConfig, family: ModelFamily, denoiser_config: Mapping[str, Any] | None) -> None:
    """Refuse adapter options the family cannot take: a block selection it has no blocks for or indices past its
    block counts (when its config could be read), LoKr where its LoRA files fuse modules."""
    network = config.network
    if family.unet_lora_naming == "bfl" and network.module == "lokr":
        raise TrainingSetupError(
            f"network.module: LoKr adapters cannot be written in {family.title}'s LoRA layout (q, k, v fused in "
            "one module, which a Kronecker product cannot hold); use network.module = 'lora'"
        )
    if not family.unet_block_kinds:
        if not network.selects_all_blocks:
            raise TrainingSetupError(
                f"network.train_blocks / train_*_block_indices: they select FLUX.1 transformer blocks; a "
                f"{family.title} model has none to select, unset them"
            )
        return
    for kind, block in family.unet_block_kinds.items():
        indices = parse_block_indices(network.block_indices[kind]) or frozenset()
        count = int((denoiser_config or {}).get(block.count_key, 0))
        if denoiser_config is not None and indices and max(indices) >= count:
            raise TrainingSetupError(
                f"network.train_{kind}_block_indices: block {max(indices)} does not exist; this {family.title} model "
                f"has {count} {kind} blocks (0-{count - 1})"
            )
