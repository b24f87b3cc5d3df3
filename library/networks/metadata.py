"""The metadata every LoRA file carries: sd-scripts' ``ss_*`` training record and ``modelspec.*``.

A1111, Civitai and the additional-networks extension display these keys, so values follow sd-scripts'
spelling: plain ``str()`` of numbers, booleans and None, JSON for the per-folder tables.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from library.models.families import ModelFamily
from library.models.single_file.checkpoint import default_metadata
from library.networks.config import LoraOptions

NETWORK_MODULE = "networks.lora"
# modelspec.implementation: whose module names the file's keys use.
_IMPLEMENTATION = {"diffusers": "diffusers", "sgm": "https://github.com/Stability-AI/generative-models"}


@dataclass(frozen=True)
class TrainingInfo:
    """What the trainer knows about a run, as the ``ss_*`` keys record it (one field per key, without ``ss_``)."""

    output_name: str
    resolution: tuple[int, int]
    learning_rate: float
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    num_train_images: int = 0
    num_reg_images: int = 0
    num_epochs: int = 1
    epoch: int = 0
    steps: int = 0
    max_train_steps: int = 0
    batch_size_per_device: int = 1
    gradient_accumulation_steps: int = 1
    optimizer: str = "AdamW"
    lr_scheduler: str = "constant"
    mixed_precision: str = "no"
    seed: int | None = None
    clip_skip: int | None = None
    noise_offset: float | None = None
    min_snr_gamma: float | None = None
    training_started_at: float = 0.0  # seconds since the epoch
    training_finished_at: float | None = None
    sd_model_name: str = ""
    session_id: str = ""
    training_comment: str | None = None
    tag_frequency: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # {dataset dir: {tag: count}}
    dataset_dirs: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # {dir: {n_repeats, img_count}}
    bucket_info: Mapping[str, object] | None = None


_PLAIN_FIELDS = (
    "output_name",
    "learning_rate",
    "unet_lr",
    "text_encoder_lr",
    "num_train_images",
    "num_reg_images",
    "num_epochs",
    "epoch",
    "steps",
    "max_train_steps",
    "batch_size_per_device",
    "gradient_accumulation_steps",
    "optimizer",
    "lr_scheduler",
    "mixed_precision",
    "seed",
    "clip_skip",
    "noise_offset",
    "min_snr_gamma",
    "training_started_at",
    "training_finished_at",
    "sd_model_name",
    "session_id",
    "training_comment",
)
_JSON_FIELDS = ("tag_frequency", "dataset_dirs", "bucket_info")


def network_args(options: LoraOptions) -> dict[str, str]:
    """The adapter options beyond dim/alpha, as sd-scripts' ``network_args`` strings."""
    args: dict[str, str] = {}
    if options.conv_dim is not None:
        args.update(conv_dim=str(options.conv_dim), conv_alpha=str(options.effective_conv_alpha))
    if options.use_dora:
        args["dora_wd"] = "True"
    return args


def training_metadata(family: ModelFamily, options: LoraOptions, info: TrainingInfo) -> dict[str, str]:
    """The ``ss_*`` keys."""
    metadata = {
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(options.dim),
        "ss_network_alpha": str(options.alpha),
        "ss_network_dropout": str(options.dropout),
        "ss_network_args": json.dumps(network_args(options)),
        "ss_base_model_version": family.ss_base_model_version,
        "ss_v2": str(family.ss_base_model_version.startswith("sd_v2")),
        "ss_resolution": str(tuple(info.resolution)),
    }
    for name in _PLAIN_FIELDS:
        metadata[f"ss_{name}"] = str(getattr(info, name))
    for name in _JSON_FIELDS:
        metadata[f"ss_{name}"] = json.dumps(getattr(info, name))
    return metadata


def modelspec_metadata(family: ModelFamily, info: TrainingInfo, title: str | None = None) -> dict[str, str]:
    """The ``modelspec.*`` keys (SAI model spec 1.0.1) of a LoRA for ``family``."""
    width, height = info.resolution
    metadata = default_metadata(family.name, title or info.output_name)
    metadata.update(
        {
            "modelspec.architecture": family.lora_architecture,
            "modelspec.implementation": _IMPLEMENTATION[family.unet_lora_naming],
            "modelspec.resolution": f"{width}x{height}",
            "modelspec.date": datetime.datetime.fromtimestamp(int(info.training_started_at)).isoformat(),
        }
    )
    return metadata


def lora_metadata(
    family: ModelFamily, options: LoraOptions, info: TrainingInfo, title: str | None = None
) -> dict[str, str]:
    """Everything but the hashes, which the writer adds."""
    return {**training_metadata(family, options, info), **modelspec_metadata(family, info, title)}
