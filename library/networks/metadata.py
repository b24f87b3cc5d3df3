"""The metadata every file a run writes carries: sd-scripts' ``ss_*`` training record and ``modelspec.*``.

One builder for every kind of file, so each key is produced once and no merge order decides a value: a LoRA file
(:func:`lora_metadata`, also the tools' derived LoRAs), a full fine-tuned checkpoint (:func:`checkpoint_metadata`,
the same record without the network keys) and a textual-inversion embedding (:func:`embedding_metadata`, with the
token's record). A1111, Civitai and the additional-networks extension display these keys, so values follow sd-scripts' spelling: plain ``str()`` of numbers, booleans and None, JSON for the tables.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from library.models.families import ModelFamily
from library.models.single_file.checkpoint import default_metadata
from library.networks.config import LoraOptions

# ss_network_module as sd-scripts records it: its own LoRA module, or LyCORIS's for the LyCORIS types
NETWORK_MODULES = {"lora": "networks.lora", "lokr": "lycoris.kohya"}
# modelspec.implementation: whose module names the file's keys use.
_IMPLEMENTATION = {
    "diffusers": "diffusers",
    "sgm": "https://github.com/Stability-AI/generative-models",
    "bfl": "https://github.com/black-forest-labs/flux",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a run trained on, as the ``ss_*`` keys record it (one field per key, without ``ss_``); per-dataset
    settings are the first dataset's, per-folder ones its first training folder's, as sd-scripts records them."""

    num_train_images: int  # images times repeats
    num_reg_images: int
    num_batches_per_epoch: int
    batch_size_per_device: int
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_no_upscale: bool
    dataset_dirs: Mapping[str, Mapping[str, int]]  # {folder name: {n_repeats, img_count}}
    reg_dataset_dirs: Mapping[str, Mapping[str, int]]
    tag_frequency: Mapping[str, Mapping[str, int]]  # {folder name: {tag: count}}
    bucket_info: Mapping[str, object]
    keep_tokens: int
    shuffle_caption: bool
    caption_dropout_rate: float
    caption_dropout_every_n_epochs: int
    caption_tag_dropout_rate: float
    flip_aug: bool
    color_aug: bool
    random_crop: bool
    prior_loss_weight: float
    cache_latents: bool
    masked_loss: bool  # any training folder's loss weighted by masks (mask files or alpha channels)


@dataclass(frozen=True)
class EmaInfo:
    """A run that kept an exponential moving average of its weights: its settings, and which weights the file
    holds (``weights``: the average, or the trained "raw" ones)."""

    ema_decay: float
    ema_update_every: int
    ema_warmup: bool
    weights: Literal["ema", "raw"]


@dataclass(frozen=True)
class TrainingInfo:
    """What is known about how a file's weights came to be, as the ``ss_*`` keys record it (one field per key,
    without ``ss_``). ``dataset`` is None for files no run trained (the tools' extracted LoRAs)."""

    output_name: str
    resolution: tuple[int, int]
    learning_rate: float
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    num_epochs: int = 1
    epoch: int = 0  # the epoch the weights reached, counting from 1 (0: none begun)
    steps: int = 0
    max_train_steps: int = 0
    gradient_accumulation_steps: int = 1
    optimizer: str = "AdamW"
    lr_scheduler: str = "constant"
    mixed_precision: str = "no"
    fp8_base: bool = False  # the frozen base was stored in float8 during training
    seed: int | None = None
    clip_skip: int | None = None
    noise_offset: float | None = None
    min_snr_gamma: float | None = None
    training_started_at: float = 0.0  # seconds since the epoch
    training_finished_at: float | None = None
    sd_model_name: str = ""
    session_id: str = ""
    training_comment: str | None = None
    dataset: DatasetInfo | None = None
    ema: EmaInfo | None = None  # files of a run without an EMA carry no EMA keys


@dataclass(frozen=True)
class EmbeddingInfo:
    """A textual-inversion embedding's own record (``ss_token_string``, ...; the step is ``ss_steps``)."""

    token_string: str
    num_vectors_per_token: int
    init_word: str


def _value(value: object) -> str:
    return json.dumps(value) if isinstance(value, Mapping) else str(value)


def _record(record: TrainingInfo | DatasetInfo | EmaInfo | EmbeddingInfo, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {f"ss_{f.name}": _value(getattr(record, f.name)) for f in fields(record) if f.name not in skip}


def network_args(options: LoraOptions) -> dict[str, str]:
    """The adapter options beyond dim/alpha, as sd-scripts' ``network_args`` strings (LyCORIS's names for LoKr)."""
    args: dict[str, str] = {}
    if options.is_lokr:
        args.update(algo="lokr", factor=str(options.lokr_factor))
        if options.lokr_full_matrix:
            args["full_matrix"] = "True"
    if options.conv_dim is not None:
        args.update(conv_dim=str(options.conv_dim), conv_alpha=str(options.effective_conv_alpha))
    if options.use_dora:
        args["dora_wd"] = "True"
    if not options.selects_all_blocks:
        args["train_blocks"] = options.train_blocks
        args.update({f"train_{kind}_block_indices": text for kind, text in options.block_indices.items()})
    return args


def _network_record(options: LoraOptions) -> dict[str, str]:
    return {
        "ss_network_module": NETWORK_MODULES[options.module],
        "ss_network_dim": str(options.dim),
        "ss_network_alpha": str(options.alpha),
        "ss_network_dropout": str(options.dropout),
        "ss_network_args": json.dumps(network_args(options)),
    }


def _modelspec(family: ModelFamily, info: TrainingInfo, architecture: str, title: str | None) -> dict[str, str]:
    """The ``modelspec.*`` keys (SAI model spec 1.0.1)."""
    width, height = info.resolution
    return {
        **default_metadata(family.name, title or info.output_name),
        "modelspec.architecture": architecture,
        "modelspec.implementation": _IMPLEMENTATION[family.unet_lora_naming],
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(info.training_started_at)).isoformat(),
    }


def _metadata(
    family: ModelFamily, info: TrainingInfo, kind_record: dict[str, str], architecture: str, title: str | None
) -> dict[str, str]:
    parts = [
        kind_record,
        {
            "ss_base_model_version": family.ss_base_model_version,
            "ss_v2": str(family.ss_base_model_version.startswith("sd_v2")),
            "ss_resolution": str(tuple(info.resolution)),
        },
        _record(info, skip=("resolution", "dataset", "ema")),
        _record(info.dataset) if info.dataset is not None else {},
        _record(info.ema) if info.ema is not None else {},
        _modelspec(family, info, architecture, title),
    ]
    metadata: dict[str, str] = {}
    for part in parts:
        metadata.update(part)
    assert len(metadata) == sum(map(len, parts)), "a metadata key is produced twice"
    return metadata


def lora_metadata(
    family: ModelFamily, options: LoraOptions, info: TrainingInfo, title: str | None = None
) -> dict[str, str]:
    """A LoRA file's metadata, all but the hashes (the writer adds them)."""
    return _metadata(family, info, _network_record(options), family.lora_architecture, title)


def hypernetwork_metadata(family: ModelFamily, info: TrainingInfo, title: str | None = None) -> dict[str, str]:
    """A hypernetwork file's metadata: the training record without network keys, under its own architecture."""
    return _metadata(family, info, {}, family.hypernetwork_architecture, title)


def checkpoint_metadata(family: ModelFamily, info: TrainingInfo, title: str | None = None) -> dict[str, str]:
    """A full fine-tuned checkpoint's metadata: the training record without network keys."""
    return _metadata(family, info, {}, family.modelspec_architecture, title)


def embedding_metadata(family: ModelFamily, info: TrainingInfo, embedding: EmbeddingInfo) -> dict[str, str]:
    """A textual-inversion embedding's metadata: the training record with the token's own, all but the hashes."""
    return _metadata(family, info, _record(embedding), f"{family.modelspec_architecture}/textual-inversion", None)
