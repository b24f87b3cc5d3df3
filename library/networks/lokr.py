"""LyCORIS LoKr modules (``lokr_*`` keys): their layout, their weight update, and their tensors in a file.

A LoKr update is the Kronecker product ``w1 ⊗ w2`` of a small factor ``w1`` [a, c] and a large one ``w2`` [b, d]
(a convolution's ``w2`` carries the kernel: [b, d, kh, kw]), so ``out = a * b`` and ``in = c * d``. Per module
``<name>`` a file holds ``lokr_w1`` (or, factorized, ``lokr_w1_a`` [a, r] and ``lokr_w1_b`` [r, c]), ``lokr_w2`` (or
``lokr_w2_a`` [b, r] and ``lokr_w2_b`` [r, d*kh*kw]; in Tucker form ``lokr_t2`` [r, r, kh, kw] with ``lokr_w2_a``
[r, b] and ``lokr_w2_b`` [r, d]), ``alpha`` and optionally ``dora_scale``.

The scale is ``alpha / r``, r being the rank of the factorized side, and 1 when both factors are stored whole
(LyCORIS then writes alpha = dim): the rule LyCORIS, ComfyUI and A1111 apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import prod

import torch

from library.networks.lora_file import ALPHA, DORA_SCALE, LoraFileError, take_modules

# field of LokrWeights -> key suffix in a file
FACTOR_KEYS = {
    "w1": ".lokr_w1",
    "w1_a": ".lokr_w1_a",
    "w1_b": ".lokr_w1_b",
    "w2": ".lokr_w2",
    "w2_a": ".lokr_w2_a",
    "w2_b": ".lokr_w2_b",
    "t2": ".lokr_t2",
}
LOKR_SUFFIXES = tuple(FACTOR_KEYS.values())


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """``dimension`` as ``m * n`` with ``m <= n``: ``factor`` and the rest when it divides, else the pair closest to a
    square whose smaller side stays <= ``factor`` (-1: no bound). LyCORIS's split, so shapes match its files."""
    if factor > 0 and dimension % factor == 0:
        return min(factor, dimension // factor), max(factor, dimension // factor)
    bound = dimension if factor < 0 else factor
    m, n = 1, dimension
    while m < n:
        candidate = m + 1
        while dimension % candidate:
            candidate += 1
        if candidate + dimension // candidate > m + n or candidate > bound:
            break
        m, n = candidate, dimension // candidate
    return min(m, n), max(m, n)


@dataclass(frozen=True)
class LokrLayout:
    """The factor shapes of one module: ``w1`` [a, c] whole, ``w2`` [b, d, *kernel] whole or, with ``rank``, as
    ``w2_a`` [b, rank] @ ``w2_b`` [rank, d * kernel]."""

    w1: tuple[int, int]
    w2: tuple[int, ...]
    rank: int | None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Field name -> shape, the tensors a module of this layout holds."""
        if self.rank is None:
            return {"w1": self.w1, "w2": self.w2}
        return {"w1": self.w1, "w2_a": (self.w2[0], self.rank), "w2_b": (self.rank, prod(self.w2[1:]))}


def lokr_layout(weight_shape: tuple[int, ...], rank: int, factor: int, full_matrix: bool) -> LokrLayout:
    """LyCORIS's layout for a weight: ``w2`` is kept whole with ``full_matrix`` or when ``rank`` is at least half its
    larger side (a product of that rank would not be smaller)."""
    out_dim, in_dim, *kernel = weight_shape
    out_small, out_large = factorization(out_dim, factor)
    in_small, in_large = factorization(in_dim, factor)
    whole = full_matrix or rank >= max(out_large, in_large) / 2
    return LokrLayout((out_small, in_small), (out_large, in_large, *kernel), None if whole else rank)


@dataclass(frozen=True)
class LokrWeights:
    """The tensors of one LoKr module (either ``w1`` or ``w1_a``/``w1_b``, either ``w2`` or ``w2_a``/``w2_b``)."""

    KIND = "LoKr"
    KEYS = "lokr_*"

    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None
    dora_scale: torch.Tensor | None = None

    @property
    def factors(self) -> dict[str, torch.Tensor]:
        """Field name -> tensor of the factors present."""
        return {name: getattr(self, name) for name in FACTOR_KEYS if getattr(self, name) is not None}

    @property
    def rank(self) -> int | None:
        """The rank of the factorized side; None when both factors are stored whole."""
        if self.w2 is None:
            return self.w2_b.shape[0]
        return None if self.w1 is not None else self.w1_b.shape[0]

    @property
    def update_numel(self) -> int:
        w1 = self.w1.numel() if self.w1 is not None else self.w1_a.shape[0] * self.w1_b.shape[1]
        if self.w2 is not None:
            w2 = self.w2.numel()
        elif self.t2 is not None:
            w2 = self.w2_a.shape[1] * self.w2_b.shape[1] * self.t2[0, 0].numel()
        else:
            w2 = self.w2_a.shape[0] * self.w2_b.shape[1]
        return w1 * w2

    @property
    def scale(self) -> float:
        return 1.0 if self.rank is None or self.alpha is None else self.alpha / self.rank

    def delta(self, shape: torch.Size | None = None) -> torch.Tensor:
        """``w1 ⊗ w2``, unscaled, in float32: [out, in] ([out, in*kh*kw] for a factorized conv, [out, in, kh, kw]
        for a whole one); as a weight of ``shape`` when given."""
        w1 = self.w1.float() if self.w1 is not None else self.w1_a.float() @ self.w1_b.float()
        if self.w2 is not None:
            w2 = self.w2.float()
        elif self.t2 is not None:
            w2 = torch.einsum("i j ..., i p, j r -> p r ...", self.t2.float(), self.w2_a.float(), self.w2_b.float())
        else:
            w2 = self.w2_a.float() @ self.w2_b.float()
        delta = torch.kron(w1.reshape(*w1.shape, *[1] * (w2.ndim - 2)), w2.contiguous())
        return delta if shape is None else delta.reshape(shape)

    def tensors(self, name: str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The file keys of this module under ``name`` (the inverse of :func:`split_lokr`)."""

        def cast(tensor: torch.Tensor) -> torch.Tensor:
            return (tensor if dtype is None else tensor.to(dtype)).contiguous()

        out = {name + FACTOR_KEYS[field]: cast(tensor) for field, tensor in self.factors.items()}
        if self.alpha is not None:
            out[name + ALPHA] = torch.tensor(float(self.alpha), dtype=dtype or torch.float32)
        if self.dora_scale is not None:
            out[name + DORA_SCALE] = cast(self.dora_scale)
        return out


def split_lokr(
    state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, LokrWeights]]:
    """(the tensors of other modules, the LoKr modules by name) of a file's tensors."""
    return take_modules(
        state_dict, LOKR_SUFFIXES, lambda name, alpha: _lokr_module(state_dict, name, alpha, source), source
    )


def _lokr_module(state_dict: Mapping[str, torch.Tensor], name: str, alpha: float | None, source: str) -> LokrWeights:
    found = {field: state_dict[name + key] for field, key in FACTOR_KEYS.items() if name + key in state_dict}
    for whole, pair in (("w1", ("w1_a", "w1_b")), ("w2", ("w2_a", "w2_b"))):
        if whole not in found and not all(part in found for part in pair):
            lacking = next(part for part in pair if part not in found)
            raise LoraFileError(
                f"{source}: LoKr module {name!r} has neither {name}{FACTOR_KEYS[whole]} nor "
                f"{name}{FACTOR_KEYS[lacking]}; the file is incomplete"
            )
    weights = LokrWeights(**found, alpha=alpha, dora_scale=state_dict.get(name + DORA_SCALE))
    try:
        weights.delta()
    except RuntimeError:
        raise LoraFileError(
            f"{source}: LoKr module {name!r} has lokr_* tensors whose shapes do not fit together"
        ) from None
    return weights
