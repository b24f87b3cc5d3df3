"""Low-rank factorisation by SVD: the arithmetic behind resize, extract and SVD merges.

A module's update is the matrix ``delta = up @ down * alpha / rank`` (convs flattened to ``[out, in*kh*kw]``).
Truncating its SVD to rank r keeps the r largest singular values; the share of the squared Frobenius norm they
hold is the "retained energy" the tools report. The singular values are split evenly (sqrt) between the new up
and down factors so neither factor gets the whole dynamic range, which matters when saving in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from library.networks.lora_file import ModuleWeights

DynamicMethod = Literal["sv_ratio", "sv_fro", "sv_cumulative"]
DYNAMIC_METHODS: tuple[str, ...] = ("sv_ratio", "sv_fro", "sv_cumulative")


@dataclass(frozen=True)
class RankRule:
    """How to choose a module's new rank: at most ``max_rank``, further limited by a dynamic criterion."""

    max_rank: int | None = None
    method: DynamicMethod | None = None
    parameter: float = 0.0

    def choose(self, singular_values: torch.Tensor) -> int:
        """The rank to keep for these (descending) singular values; at least 1."""
        values = singular_values.double()
        full = int((values > values[0] * 1e-7).sum()) if values.numel() and values[0] > 0 else 1
        rank = full
        if self.method == "sv_ratio":
            rank = int((values >= values[0] / self.parameter).sum())
        elif self.method == "sv_fro":
            energy = (values**2).cumsum(0) / (values**2).sum()
            rank = int((energy.sqrt() < self.parameter - 1e-12).sum()) + 1
        elif self.method == "sv_cumulative":
            share = values.cumsum(0) / values.sum()
            rank = int((share < self.parameter - 1e-12).sum()) + 1
        if self.max_rank is not None:
            rank = min(rank, self.max_rank)
        return max(1, min(rank, full))


@dataclass(frozen=True)
class Factorised:
    """A module's new factors and how much of the update they keep."""

    weights: ModuleWeights
    retained_energy: float  # share of the update's squared Frobenius norm kept, 0..1


def effective_delta(weights: ModuleWeights) -> torch.Tensor:
    """``up @ down * scale`` as a 2-D float32 matrix ``[out, in*kh*kw]``."""
    up = weights.up.float().reshape(weights.up.shape[0], weights.rank)
    down = weights.down.float().reshape(weights.rank, -1)
    return (up @ down) * weights.scale


def factorise(
    delta: torch.Tensor,
    rule: RankRule,
    down_shape: tuple[int, ...],
    up_shape: tuple[int, ...],
    alpha_per_rank: float | None = None,
    dora_scale: torch.Tensor | None = None,
) -> Factorised:
    """Factors of the 2-D ``delta`` at the rank ``rule`` picks.

    ``down_shape``/``up_shape`` are the factor shapes without the rank (``(in, kh, kw)`` and ``(out, 1, 1)`` for
    a conv). ``alpha_per_rank`` keeps a file's alpha/rank ratio (new alpha = ratio * new rank); None = alpha = rank.
    """
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    rank = rule.choose(s)
    total = float((s**2).sum())
    retained = float((s[:rank] ** 2).sum()) / total if total > 0 else 1.0
    alpha = float(rank) if alpha_per_rank is None else alpha_per_rank * rank
    root = (s[:rank] / (alpha / rank)).sqrt()
    up = (u[:, :rank] * root).float()
    down = (root[:, None] * vh[:rank]).float()
    weights = ModuleWeights(
        down=down.reshape(rank, *down_shape).contiguous(),
        up=up.reshape(up_shape[0], rank, *up_shape[1:]).contiguous(),
        alpha=alpha,
        dora_scale=dora_scale,
    )
    return Factorised(weights, retained)


def factor_shapes(weights: ModuleWeights) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(down shape, up shape) of a module without the rank dimension."""
    return tuple(weights.down.shape[1:]), (weights.up.shape[0], *weights.up.shape[2:])
