"""Read checkpoint files safely: ``.safetensors`` directly, ``.ckpt``/``.pt`` without ever running pickled code."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from library.models.errors import ModelLoadError

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (tensors, metadata) of a checkpoint file; metadata is empty for pickle files."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle_checkpoint(path), {}
    raise ModelLoadError(
        f"{path}: unsupported checkpoint extension {path.suffix!r}; expected .safetensors or .ckpt"
    )


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(f"{path}: not a readable .safetensors file ({error})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(
            f"{path}: not a readable .safetensors file ({error}); the download may be incomplete"
        ) from None
    return tensors, metadata


def load_plain_pickle(path: Path) -> object:
    """Load a ``.ckpt``/``.pt`` with ``weights_only=True``: tensors and plain values only; a file that wants to run
    code is refused (ModelLoadError saying so), as is one that is truncated."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"{path}: refused to load: this {path.suffix} holds pickled objects beyond plain tensors, and "
            f"unpickling them could run arbitrary code ({first_line}). Use a .safetensors release, or convert the "
            "file to .safetensors on a machine where you trust it."
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ModelLoadError(f"{path}: not a readable checkpoint ({error}); the file may be truncated") from None


def _read_pickle_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a pickle checkpoint (see :func:`load_plain_pickle`)."""
    loaded = load_plain_pickle(path)
    state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict):
        raise ModelLoadError(f"{path}: the checkpoint does not contain a state dict of tensors")
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ModelLoadError(f"{path}: the checkpoint contains no tensors")
    return tensors
