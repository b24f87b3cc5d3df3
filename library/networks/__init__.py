"""LoRA / LoCon / DoRA adapters: peft injection, the kohya file format, its metadata and hashes, merging.

The peft-backed network (``LoraNetwork``, ``inject_lora``) is imported on first use: peft imports bitsandbytes,
which costs seconds and prints warnings on machines without its kernels, and the file tools never need it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from library.networks.config import LoraOptions
from library.networks.hashes import lora_hashes, verify_hashes
from library.networks.lora_file import LoraFileError, read_lora_file, save_dtype, split_modules, write_lora_file
from library.networks.merge import merge_lora_into
from library.networks.metadata import (
    DatasetInfo,
    EmaInfo,
    EmbeddingInfo,
    TrainingInfo,
    checkpoint_metadata,
    embedding_metadata,
    hypernetwork_metadata,
    lora_metadata,
)
from library.networks.naming import LoraNamer, SgmNames

if TYPE_CHECKING:
    from library.networks.network import LoraNetwork, inject_lora

_LAZY = {"LoraNetwork": "library.networks.network", "inject_lora": "library.networks.network"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "DatasetInfo",
    "EmaInfo",
    "EmbeddingInfo",
    "LoraFileError",
    "LoraNamer",
    "LoraNetwork",
    "LoraOptions",
    "SgmNames",
    "TrainingInfo",
    "checkpoint_metadata",
    "embedding_metadata",
    "hypernetwork_metadata",
    "inject_lora",
    "lora_hashes",
    "lora_metadata",
    "merge_lora_into",
    "read_lora_file",
    "save_dtype",
    "split_modules",
    "verify_hashes",
    "write_lora_file",
]
