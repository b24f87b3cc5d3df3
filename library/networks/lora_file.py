"""Kohya-format LoRA files: group the flat tensors by module, read them, write them atomically with hashes.

Per module ``<name>``: ``<name>.lora_down.weight`` ([rank, in] or [rank, in, kh, kw]), ``<name>.lora_up.weight``
([out, rank] or [out, rank, 1, 1]), ``<name>.alpha`` (0-dim; scale = alpha / rank) and, for DoRA,
``<name>.dora_scale`` (per-output-row magnitude, [out, 1] or [out, 1, 1, 1]).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from library.atomic_files import write_bytes_atomic
from library.networks.bundled_embeddings import is_bundled
from library.networks.hashes import lora_hashes

logger = logging.getLogger(__name__)

DOWN, UP, ALPHA, DORA_SCALE = ".lora_down.weight", ".lora_up.weight", ".alpha", ".dora_scale"
_SUFFIXES = (DOWN, UP, ALPHA, DORA_SCALE)
T = TypeVar("T")
SAVE_PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32, "fp32": torch.float32}


class LoraFileError(ValueError):
    """A LoRA file or state dict that cannot be used; ``str()`` names the file/key and what to do."""


@dataclass(frozen=True)
class ModuleWeights:
    """The tensors of one adapted module."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None
    dora_scale: torch.Tensor | None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def update_numel(self) -> int:
        return self.up.shape[0] * self.down[0].numel()

    @property
    def scale(self) -> float:
        """alpha / rank, with a missing alpha meaning alpha = rank (as every kohya reader assumes)."""
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def delta(self, shape: torch.Size) -> torch.Tensor:
        """``up @ down`` as a weight of ``shape`` (conv-aware), unscaled, in float32."""
        up = self.up.float().reshape(self.up.shape[0], self.rank)
        down = self.down.float().reshape(self.rank, -1)
        return (up @ down).reshape(shape)


def save_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a ``save_precision`` name (fp16, bf16, float/fp32)."""
    try:
        return SAVE_PRECISIONS[precision]
    except KeyError:
        raise LoraFileError(
            f"unknown save precision {precision!r}; expected one of {', '.join(SAVE_PRECISIONS)}"
        ) from None


def read_alpha(state_dict: Mapping[str, torch.Tensor], name: str, source: str) -> float | None:
    """A module's ``alpha`` (None when absent), checked to hold one number."""
    alpha = state_dict.get(name + ALPHA)
    if alpha is None:
        return None
    if alpha.numel() != 1:
        raise LoraFileError(f"{source}: {name}{ALPHA} must hold one number, has shape {tuple(alpha.shape)}")
    return float(alpha.float().item())


def take_modules(
    state_dict: Mapping[str, torch.Tensor],
    suffixes: tuple[str, ...],
    build: Callable[[str, float | None], T],
    source: str,
) -> tuple[dict[str, torch.Tensor], dict[str, T]]:
    """Split off the modules of one LyCORIS type: those with a key ending in one of ``suffixes``, each built by
    ``build(name, alpha)``. Returns (the other tensors, the modules by name); a module's alpha and dora_scale go
    with it."""
    names = {key[: -len(suffix)] for key in state_dict for suffix in suffixes if key.endswith(suffix)}
    modules = {name: build(name, read_alpha(state_dict, name, source)) for name in sorted(names)}
    owned = {name + suffix for name in names for suffix in (*suffixes, ALPHA, DORA_SCALE)}
    return {key: tensor for key, tensor in state_dict.items() if key not in owned}, modules


def split_modules(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, ModuleWeights]:
    """Group a kohya-layout state dict by module name, checking that every module is complete and consistent.
    Embeddings bundled in the file (``bundled_embeddings.py``) are not modules and are left out."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        if is_bundled(key):
            continue
        suffix = next((suffix for suffix in _SUFFIXES if key.endswith(suffix)), None)
        if suffix is None:
            raise LoraFileError(
                f"{source}: key {key!r} is not part of a kohya LoRA (expected <module>{DOWN}, {UP}, {ALPHA} or "
                f"{DORA_SCALE}); LoHa/LoKr and other LyCORIS types are not supported"
            )
        parts.setdefault(key[: -len(suffix)], {})[suffix] = tensor
    modules = {}
    for name, found in parts.items():
        if DOWN not in found or UP not in found:
            lacking = DOWN if DOWN not in found else UP
            raise LoraFileError(f"{source}: module {name!r} lacks {name}{lacking}; the file is incomplete")
        down, up = found[DOWN], found[UP]
        if down.ndim not in (2, 4) or up.ndim != down.ndim or up.shape[1] != down.shape[0]:
            raise LoraFileError(
                f"{source}: module {name!r} has lora_down {tuple(down.shape)} and lora_up {tuple(up.shape)}, "
                "which do not form a low-rank pair"
            )
        modules[name] = ModuleWeights(
            down=down, up=up, alpha=read_alpha(state_dict, name, source), dora_scale=found.get(DORA_SCALE)
        )
    return modules


def module_tensors(name: str, weights: ModuleWeights, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The kohya keys of one module (the inverse of :func:`split_modules`)."""

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return (tensor if dtype is None else tensor.to(dtype)).contiguous()

    tensors = {name + DOWN: cast(weights.down), name + UP: cast(weights.up)}
    if weights.alpha is not None:
        tensors[name + ALPHA] = torch.tensor(float(weights.alpha), dtype=dtype or torch.float32)
    if weights.dora_scale is not None:
        tensors[name + DORA_SCALE] = cast(weights.dora_scale)
    return tensors


def modules_tensors(modules: Mapping[str, ModuleWeights], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The kohya keys of many modules."""
    return {key: tensor for name, weights in modules.items() for key, tensor in module_tensors(name, weights, dtype).items()}


def read_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` LoRA file, checked to be in the kohya layout."""
    tensors, metadata = read_tensors_file(path)
    split_modules(tensors, str(path))
    return tensors, metadata


def read_tensors_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of an adapter ``.safetensors`` file, whatever its layout."""
    path = Path(path)
    if not path.is_file():
        raise LoraFileError(f"LoRA file {path} does not exist; check the path (network_weights or the tool's input)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise LoraFileError(f"LoRA file {path} is not a readable .safetensors file ({error})") from None
    return tensors, metadata


def write_lora_file(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> dict[str, str]:
    """Write a LoRA file atomically with its two hashes added to ``metadata``.

    Returns the metadata as written.
    """
    path = Path(path)
    not_strings = [key for key, value in metadata.items() if not isinstance(value, str)]
    if not_strings:
        raise LoraFileError(f"metadata values must be strings; {not_strings[0]!r} is {type(metadata[not_strings[0]])}")
    written = {**metadata, **lora_hashes(tensors, metadata)}
    data = save(dict(tensors), metadata=written)
    write_bytes_atomic(path, data)
    modules = {key.split(".", 1)[0] for key in tensors}
    logger.info("wrote LoRA %s (%d modules, %.1f MB)", path, len(modules), len(data) / 1e6)
    return written
