"""FLUX.1 LoRA modules in the kohya/BFL file layout: the transformer's adapters named by Black Forest Labs' modules.

Adapters live on diffusers' modules (``transformer_blocks.0.attn.to_q`` ...); files name BFL's
(``lora_unet_double_blocks_0_img_attn_qkv``), where q, k and v (and a single block's MLP input) are one Linear.
Writing fuses the parts: downs stacked to ``[sum of ranks, in]``, ups block-diagonal ``[sum of outs, sum of
ranks]``, alpha multiplied by the number of parts so alpha / rank stays each part's scale (parts of equal rank and
alpha only). Reading splits a fused module back: blocks when its up is block-diagonal (ours; diffusers' converter
reads those the same way), otherwise the shared down with row slices of the up (how sd-scripts trains fused
layers). Both splits are exact: each part's update is its rows of the fused update. The names and fusions come
from ``models/single_file/bfl_layout.py``, the table the checkpoint converter uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from library.models.single_file.bfl_layout import BflModule, bfl_linear_modules
from library.networks.lora_file import LoraFileError, ModuleWeights
from library.networks.naming import flatten

_BLOCK_INDEX = re.compile(r"(double_blocks|single_blocks|single_transformer_blocks|transformer_blocks)_(\d+)_")


@dataclass(frozen=True)
class FusedName:
    """A BFL module's file name, its parts' names as the adapters are held (diffusers paths, flattened) and
    those paths."""

    name: str
    parts: tuple[str, ...]
    paths: tuple[str, ...]
    heights: tuple[int, ...]
    swap_halves: bool


def bfl_names(prefix: str, names: Iterable[str]) -> list[FusedName]:
    """The BFL modules of a transformer deep enough for every block index in ``names``, flattened under
    ``prefix``."""
    depth = {"double": 0, "single": 0}
    for name in names:
        for kind, index in _BLOCK_INDEX.findall(name):
            key = "single" if kind.startswith("single") else "double"
            depth[key] = max(depth[key], int(index) + 1)
    return [_flat(prefix, module) for module in bfl_linear_modules(depth["double"], depth["single"])]


def _flat(prefix: str, module: BflModule) -> FusedName:
    parts = tuple(flatten(prefix, part) for part in module.parts)
    return FusedName(flatten(prefix, module.bfl), parts, module.parts, module.heights, module.swap_halves)


def _swap(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None:
        return None
    first, second = torch.chunk(tensor, 2, dim=0)
    return torch.cat([second, first], dim=0)


def _swapped(weights: ModuleWeights) -> ModuleWeights:
    return ModuleWeights(weights.down, _swap(weights.up), weights.alpha, _swap(weights.dora_scale))


def fuse(modules: Mapping[str, ModuleWeights], prefix: str, source: str) -> dict[str, ModuleWeights]:
    """Adapters by diffusers-path name -> modules by BFL file name (other names, e.g. text encoders', unchanged)."""
    out: dict[str, ModuleWeights] = {}
    used: set[str] = set()
    for fused in bfl_names(prefix, modules):
        present = [part for part in fused.parts if part in modules]
        if not present:
            continue
        if len(present) != len(fused.parts):
            absent = next(part for part in fused.parts if part not in modules)
            raise LoraFileError(
                f"{source}: {fused.name} fuses {len(fused.parts)} modules but {absent} has no adapter; adapt all "
                "of them or save in the diffusers layout (network.save_format = 'diffusers')"
            )
        used.update(present)
        parts = [modules[part] for part in fused.parts]
        out[fused.name] = _swapped(parts[0]) if fused.swap_halves else _fuse_parts(fused, parts, source)
    out.update({name: weights for name, weights in modules.items() if name not in used})
    return out


def _fuse_parts(fused: FusedName, parts: list[ModuleWeights], source: str) -> ModuleWeights:
    if len(parts) == 1:
        return parts[0]
    if len({(weights.rank, weights.alpha) for weights in parts}) > 1:
        found = ", ".join(f"rank {weights.rank} alpha {weights.alpha}" for weights in parts)
        raise LoraFileError(
            f"{source}: {fused.name} fuses modules of unequal rank/alpha ({found}); the kohya layout needs them "
            "equal: save in the diffusers layout (network.save_format = 'diffusers')"
        )
    if any(weights.down.ndim != 2 for weights in parts):
        raise LoraFileError(f"{source}: {fused.name}: only Linear adapters can be fused")
    dora = [weights.dora_scale for weights in parts]
    if any(scale is None for scale in dora) and any(scale is not None for scale in dora):
        raise LoraFileError(f"{source}: {fused.name} fuses DoRA and plain LoRA modules; use one kind for all")
    alpha = None if parts[0].alpha is None else parts[0].alpha * len(parts)
    return ModuleWeights(
        down=torch.cat([weights.down for weights in parts], dim=0),
        up=torch.block_diag(*[weights.up for weights in parts]),
        alpha=alpha,
        dora_scale=None if dora[0] is None else torch.cat(dora, dim=0),
    )


def _row_sizes(fused: FusedName, rows: int, source: str) -> list[int]:
    unit, remainder = divmod(rows, sum(fused.heights))
    if remainder:
        raise LoraFileError(
            f"{source}: {fused.name} has {rows} output rows, which do not split into its parts "
            f"({' + '.join(f'{height}w' for height in fused.heights)}); is it a FLUX.1 LoRA?"
        )
    return [unit * height for height in fused.heights]


def _is_block_diagonal(up: torch.Tensor, rows: list[int]) -> bool:
    rank = up.shape[1]
    if rank % len(rows):
        return False
    width, start = rank // len(rows), 0
    for position, height in enumerate(rows):
        block = up[start : start + height]
        outside = torch.cat([block[:, : position * width], block[:, (position + 1) * width :]], dim=1)
        if outside.numel() and bool(outside.any()):
            return False
        start += height
    return True


def split_fused(fused: FusedName, weights: ModuleWeights, source: str) -> dict[str, ModuleWeights]:
    """One file module -> its parts' adapters, exactly (see the module docstring)."""
    if fused.swap_halves:
        return {fused.parts[0]: _swapped(weights)}
    if len(fused.parts) == 1:
        return {fused.parts[0]: weights}
    if weights.down.ndim != 2:
        raise LoraFileError(f"{source}: {fused.name} must be a Linear adapter, has lora_down {tuple(weights.down.shape)}")
    rows = _row_sizes(fused, weights.up.shape[0], source)
    ups = torch.split(weights.up, rows, dim=0)
    scales = [None] * len(rows) if weights.dora_scale is None else torch.split(weights.dora_scale, rows, dim=0)
    if _is_block_diagonal(weights.up, rows):
        rank = weights.rank // len(rows)
        alpha = None if weights.alpha is None else weights.alpha / len(rows)
        return {
            part: ModuleWeights(
                weights.down[index * rank : (index + 1) * rank].contiguous(),
                ups[index][:, index * rank : (index + 1) * rank].contiguous(),
                alpha,
                scales[index],
            )
            for index, part in enumerate(fused.parts)
        }
    return {
        part: ModuleWeights(weights.down, ups[index].contiguous(), weights.alpha, scales[index])
        for index, part in enumerate(fused.parts)
    }


def split(modules: Mapping[str, ModuleWeights], prefix: str, source: str) -> dict[str, ModuleWeights]:
    """Modules by BFL file name -> adapters by diffusers-path name; names already in diffusers terms, and
    other components' (text encoders), pass unchanged."""
    by_name = {fused.name: fused for fused in bfl_names(prefix, modules)}
    known_parts = {part for fused in by_name.values() for part in fused.parts}
    out: dict[str, ModuleWeights] = {}
    for name, weights in modules.items():
        if name in by_name:
            pieces = split_fused(by_name[name], weights, source)
        elif name.startswith(prefix) and name not in known_parts:
            raise LoraFileError(
                f"{source}: module {name!r} is no Linear of the FLUX.1 transformer (BFL names such as "
                f"{prefix}double_blocks_0_img_attn_qkv expected); is the LoRA for another model?"
            )
        else:
            pieces = {name: weights}
        clash = next((piece for piece in pieces if piece in out), None)
        if clash is not None:
            raise LoraFileError(f"{source}: {clash} is given twice (fused and on its own); the file is inconsistent")
        out.update(pieces)
    return out
