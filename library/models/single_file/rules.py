"""Key rules: how one tensor of the original layout relates to one or more tensors of a diffusers module.

Each component's layout is a list of rules generated from its config. The same list converts in both directions,
so the writer and the reader cannot drift apart. A rule names its tensors relative to the component's prefix
(``model.diffusion_model.`` …) on the original side and by the module's own state-dict keys on the diffusers side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class Transform:
    """A tensor transform and its inverse (``to_diffusers`` is None for placeholders that are never read)."""

    name: str
    to_original: Callable[[list[Tensor]], Tensor]
    to_diffusers: Callable[[Tensor, int], list[Tensor]] | None


def _as_linear(tensor: Tensor, count: int) -> list[Tensor]:
    """[C, C, 1, 1] (or [C, C, 1]) convolution weight -> [C, C] Linear weight; a 2-D tensor passes through."""
    if tensor.ndim > 2 and any(size != 1 for size in tensor.shape[2:]):
        raise ValueError(f"expected a 1x1 convolution weight, got shape {tuple(tensor.shape)}")
    return [tensor.reshape(tensor.shape[0], tensor.shape[1])]


def _split_rows(tensor: Tensor, count: int) -> list[Tensor]:
    if tensor.shape[0] % count:
        raise ValueError(f"cannot split {tuple(tensor.shape)} into {count} equal row blocks")
    return [part.contiguous() for part in torch.chunk(tensor, count, dim=0)]


COPY = Transform("copy", lambda tensors: tensors[0], lambda tensor, count: [tensor])
# VAE attention projections: 1x1 convolutions in the original model, Linear layers in diffusers.
CONV_1X1 = Transform("conv_1x1", lambda tensors: tensors[0][:, :, None, None], _as_linear)
# OpenCLIP packs q, k and v into one in_proj tensor, stacked along the output dimension.
CONCAT_ROWS = Transform("concat_rows", lambda tensors: torch.cat(tensors, dim=0), _split_rows)
# OpenCLIP applies its text projection as ``x @ P``; a Linear layer stores P transposed.
TRANSPOSE = Transform(
    "transpose", lambda tensors: tensors[0].T.contiguous(), lambda tensor, count: [tensor.T.contiguous()]
)


def _swap_halves(tensor: Tensor) -> Tensor:
    first, second = torch.chunk(tensor, 2, dim=0)
    return torch.cat([second, first], dim=0)


# FLUX.1's final modulation: BFL orders its output (shift, scale), diffusers' AdaLayerNormContinuous (scale, shift).
SWAP_HALVES = Transform(
    "swap_halves", lambda tensors: _swap_halves(tensors[0]), lambda tensor, count: [_swap_halves(tensor)]
)


def concat_rows_sized(sizes: tuple[int, ...]) -> Transform:
    """Row blocks of unequal heights stacked in one tensor (FLUX.1's single blocks fuse q, k, v and the MLP input)."""

    def split(tensor: Tensor, count: int) -> list[Tensor]:
        if tensor.shape[0] != sum(sizes):
            raise ValueError(f"cannot split {tuple(tensor.shape)} into row blocks of {list(sizes)}")
        return [part.contiguous() for part in torch.split(tensor, list(sizes), dim=0)]

    return Transform("concat_rows", lambda tensors: torch.cat(tensors, dim=0), split)


# Placeholder for a projection the diffusers module does not have: identity of the width of its source tensor.
IDENTITY = Transform(
    "identity",
    lambda tensors: torch.eye(tensors[0].shape[0], dtype=tensors[0].dtype, device=tensors[0].device),
    None,
)


@dataclass(frozen=True)
class KeyRule:
    """One original-layout tensor made from (and split back into) the listed diffusers tensors.

    A placeholder completes the conventional layout for other programs but holds nothing the diffusers module
    uses: it is written from existing tensors and never read back.
    """

    original: str
    diffusers: tuple[str, ...]
    transform: Transform = COPY
    placeholder: bool = False


def rename_by_module(key: str, table: Mapping[str, str]) -> str:
    """Rename ``key`` by its longest module prefix found in ``table`` (a whole key may be a table entry too)."""
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        target = table.get(".".join(parts[:cut]))
        if target is not None:
            return ".".join([target, *parts[cut:]])
    raise ValueError(f"no original-layout name for {key!r}: this architecture feature is not supported")


def to_original(
    rules: list[KeyRule],
    state_dict: Mapping[str, Tensor],
    shapes: Mapping[str, torch.Size],
    prefix: str,
    component: str,
) -> dict[str, Tensor]:
    """Apply ``rules`` to a module's state dict; the dict must hold exactly the module's tensors, in its shapes."""
    unexpected = sorted(set(state_dict) - set(shapes))
    if unexpected:
        raise ValueError(
            f"{component} state dict has {len(unexpected)} key(s) its config does not describe, e.g. "
            f"{unexpected[0]!r}; pass the plain module's state_dict() (adapters merged and removed)"
        )
    for key, shape in shapes.items():
        if key not in state_dict:
            raise ValueError(f"{component} state dict lacks {key!r}; it does not match its config")
        if state_dict[key].shape != shape:
            raise ValueError(
                f"{component} tensor {key!r} has shape {tuple(state_dict[key].shape)}, its config says {tuple(shape)}"
            )
    converted = {}
    for rule in rules:
        tensor = rule.transform.to_original([state_dict[key] for key in rule.diffusers])
        converted[prefix + rule.original] = tensor.clone() if rule.placeholder else tensor
    return converted


def to_diffusers(
    rules: list[KeyRule],
    state_dict: Mapping[str, Tensor],
    shapes: Mapping[str, torch.Size],
    prefix: str,
    component: str,
) -> dict[str, Tensor]:
    """Read a module's state dict out of an original-layout dict; every expected key must be present."""
    converted: dict[str, Tensor] = {}
    for rule in rules:
        if rule.placeholder:
            continue
        key = prefix + rule.original
        if key not in state_dict:
            raise ValueError(f"checkpoint lacks the expected key {key!r} ({component}); the file is incomplete")
        split = rule.transform.to_diffusers
        assert split is not None, "only placeholders lack an inverse transform"
        try:
            tensors = split(state_dict[key], len(rule.diffusers))
        except ValueError as error:
            raise ValueError(f"checkpoint key {key!r} ({component}): {error}") from None
        for name, tensor in zip(rule.diffusers, tensors):
            if tensor.shape != shapes[name]:
                raise ValueError(
                    f"checkpoint key {key!r} ({component}) has shape {tuple(state_dict[key].shape)}, which does not "
                    f"fit the architecture inferred from the rest of the file"
                )
            converted[name] = tensor
    return converted
