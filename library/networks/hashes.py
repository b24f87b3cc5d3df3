"""The two ``sshs_*`` hashes A1111's additional-networks extension and Civitai show for a LoRA file.

Both are taken over a canonical serialisation, the file as it would be written with only its ``ss_*`` metadata,
so adding or editing other metadata (titles, modelspec, the hashes themselves) does not change them:

- ``sshs_model_hash``: sha256 hex of the tensor-data section (everything after the 8-byte length and the header);
- ``sshs_legacy_hash``: first 8 hex digits of the sha256 of the 0x10000 bytes at offset 0x100000 (a file shorter
  than 1 MiB hashes empty input, ``e3b0c442``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

MODEL_HASH_KEY = "sshs_model_hash"
LEGACY_HASH_KEY = "sshs_legacy_hash"
_LEGACY_OFFSET = 0x100000
_LEGACY_LENGTH = 0x10000


def _canonical_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    training_metadata = {key: value for key, value in metadata.items() if key.startswith("ss_")}
    return save(dict(tensors), metadata=training_metadata)


def lora_hashes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, str]:
    """Both hashes of a LoRA file that would hold ``tensors`` and ``metadata``."""
    data = _canonical_bytes(tensors, metadata)
    (header_length,) = struct.unpack("<Q", data[:8])
    return {
        MODEL_HASH_KEY: hashlib.sha256(data[8 + header_length :]).hexdigest(),
        LEGACY_HASH_KEY: hashlib.sha256(data[_LEGACY_OFFSET : _LEGACY_OFFSET + _LEGACY_LENGTH]).hexdigest()[:8],
    }


def verify_hashes(path: str | Path) -> bool:
    """Whether the hashes stored in a LoRA file match its tensors and ``ss_*`` metadata (False if absent)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if MODEL_HASH_KEY not in metadata or LEGACY_HASH_KEY not in metadata:
        return False
    expected = lora_hashes(tensors, metadata)
    return all(metadata[key] == value for key, value in expected.items())
