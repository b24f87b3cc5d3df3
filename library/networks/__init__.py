"""LoRA / LoCon / DoRA adapters: peft injection, the kohya file format, its metadata and hashes, merging."""

from library.networks.config import LoraOptions
from library.networks.hashes import lora_hashes, verify_hashes
from library.networks.lora_file import LoraFileError, read_lora_file, save_dtype, split_modules, write_lora_file
from library.networks.merge import merge_lora_into
from library.networks.metadata import TrainingInfo, lora_metadata
from library.networks.naming import LoraNamer, SgmNames
from library.networks.network import LoraNetwork, inject_lora

__all__ = [
    "LoraFileError",
    "LoraNamer",
    "LoraNetwork",
    "LoraOptions",
    "SgmNames",
    "TrainingInfo",
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
