"""Low-rank factorisation by SVD: the arithmetic behind resize, extract and SVD merges.

A module's update is the matrix ``delta = up @ down * alpha / rank`` (convs flattened to ``[out, in*kh*kw]``).
Truncating its SVD to rank r keeps the r largest singular values; the share of the squared Frobenius norm they
hold is the "retained energy" the tools report. The singular values are split evenly (sqrt) between the new up
and down factors so neither factor gets the whole dynamic range, which matters when saving in fp16.

How the SVD is computed depends on what is known about the matrix:

- :func:`factor_svd`: the update of a rank-k LoRA (or the sum of several LoRAs' updates: their factors stacked)
  has rank at most k. Thin QR factorisations of ``up`` and ``down^T`` reduce it to the SVD of a k x k core, with
  the same singular values and vectors as the full SVD, in O((out + in) k^2) instead of O(out in min(out, in)).
- :func:`randomized_svd`: a difference of two models is full rank. ``torch.svd_lowrank`` finds an orthonormal
  basis Q of rank + oversample columns (with power iterations) and the SVD of ``Q^T delta``. Truncating that keeps
  a projection of ``delta``, so the energy it keeps is exact; the energy outside Q (``unresolved``) bounds how
  much more an exact truncation could keep (see :meth:`Factorised.excess_error_bound`).
- :func:`dense_svd`: the full SVD of any matrix (``extract --exact``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from library.networks.lora_file import ModuleWeights

DynamicMethod = Literal["sv_ratio", "sv_fro", "sv_cumulative"]
DYNAMIC_METHODS: tuple[str, ...] = ("sv_ratio", "sv_fro", "sv_cumulative")
RANDOM_SEED = 0  # randomized SVDs are seeded: the same inputs give the same file


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
class Spectrum:
    """An SVD ``u @ diag(s) @ vh`` (descending ``s``, float64) of a 2-D update, possibly of a subspace only."""

    u: torch.Tensor  # [out, k]
    s: torch.Tensor  # [k]
    vh: torch.Tensor  # [k, in]
    energy: float  # the whole update's squared Frobenius norm
    unresolved: float = 0.0  # the part of ``energy`` outside the subspace of ``u`` (0 for an exact SVD)


@dataclass(frozen=True)
class Factorised:
    """A module's new factors and how much of the update they keep."""

    weights: ModuleWeights
    retained_energy: float  # share of the update's squared Frobenius norm kept, 0..1 (exact for every method)
    excess_error_bound: float = 0.0  # relative error above the exact truncation's, at most (0 when exact)

    @property
    def relative_error(self) -> float:
        """``||delta - new delta||_F / ||delta||_F``."""
        return math.sqrt(max(0.0, 1.0 - self.retained_energy))


def factor_svd(up: torch.Tensor, down: torch.Tensor) -> Spectrum:
    """The exact SVD of ``up @ down`` (``[out, k] @ [k, in]``) from its factors, never forming the product.

    ``up = Qu Ru`` and ``down^T = Qd Rd`` (thin QR) give ``up @ down = Qu (Ru Rd^T) Qd^T``; the SVD of the small core
    ``Ru Rd^T = Uc S Vc^T`` is the SVD of the product with ``U = Qu Uc`` and ``V = Qd Vc``.
    """
    q_up, r_up = torch.linalg.qr(up.double())
    q_down, r_down = torch.linalg.qr(down.double().T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T, full_matrices=False)
    return Spectrum(q_up @ u, s, vh @ q_down.T, float(s.square().sum()))


def module_matrices(weights: ModuleWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """A module's factors as matrices, ``up [out, rank]`` with alpha/rank folded in and ``down [rank, in*kh*kw]``."""
    up = weights.up.reshape(weights.up.shape[0], weights.rank).double() * weights.scale
    return up, weights.down.reshape(weights.rank, -1).double()


def module_svd(weights: ModuleWeights) -> Spectrum:
    """The exact SVD of a module's update ``up @ down * alpha / rank`` (see :func:`factor_svd`)."""
    return factor_svd(*module_matrices(weights))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: the factorisations of :func:`module_svd` are far too small to gain
    from a second one, and lose a lot when it waits for a busy core (OpenMP workers meet at every call: a resize
    that takes 3 s alone took 20 s beside a training run)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def dense_svd(matrix: torch.Tensor) -> Spectrum:
    """The full SVD of a 2-D matrix, in float64."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return Spectrum(u, s, vh, float(s.square().sum()))


def randomized_svd(matrix: torch.Tensor, rank: int, oversample: int, iterations: int) -> Spectrum:
    """A partial SVD of a 2-D matrix on a random subspace of ``rank + oversample`` dimensions refined by
    ``iterations`` power iterations (``torch.svd_lowrank``, seeded); the full SVD when that subspace would not be
    smaller than the matrix."""
    size = rank + oversample
    if size >= min(matrix.shape):
        return dense_svd(matrix)
    dense = matrix.double()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        u, s, v = torch.svd_lowrank(dense, q=size, niter=iterations)
    energy = float(dense.square().sum())
    return Spectrum(u, s, v.T, energy, max(0.0, energy - float(s.square().sum())))


def excess_error_bound(spectrum: Spectrum, kept: float) -> float:
    """How far the relative error of a truncation keeping energy ``kept`` can be above the exact truncation's.

    With Q the subspace of ``spectrum`` and R = (I - QQ^T) delta, delta^T delta = (QQ^T delta)^T (QQ^T delta) + R^T R,
    so (Ky Fan) the r largest squared singular values of delta sum to at most those of Q^T delta plus
    ``||R||_F^2 = unresolved``: the exact truncation's squared error is at least ours minus ``unresolved``.
    """
    if spectrum.energy <= 0 or spectrum.unresolved <= 0:
        return 0.0
    error_squared = max(0.0, 1.0 - kept / spectrum.energy)
    floor_squared = max(0.0, error_squared - spectrum.unresolved / spectrum.energy)
    return math.sqrt(error_squared) - math.sqrt(floor_squared)


def truncate(
    spectrum: Spectrum,
    rule: RankRule,
    down_shape: tuple[int, ...],
    up_shape: tuple[int, ...],
    alpha_per_rank: float | None = None,
    dora_scale: torch.Tensor | None = None,
) -> Factorised:
    """Factors of the update ``spectrum`` describes, at the rank ``rule`` picks.

    ``down_shape``/``up_shape`` are the factor shapes without the rank (``(in, kh, kw)`` and ``(out, 1, 1)`` for
    a conv). ``alpha_per_rank`` keeps a file's alpha/rank ratio (new alpha = ratio * new rank); None = alpha = rank.
    """
    rank = rule.choose(spectrum.s)
    kept = float(spectrum.s[:rank].square().sum())
    retained = kept / spectrum.energy if spectrum.energy > 0 else 1.0
    alpha = float(rank) if alpha_per_rank is None else alpha_per_rank * rank
    root = (spectrum.s[:rank] / (alpha / rank)).sqrt()
    up = (spectrum.u[:, :rank] * root).float()
    down = (root[:, None] * spectrum.vh[:rank]).float()
    weights = ModuleWeights(
        down=down.reshape(rank, *down_shape).contiguous(),
        up=up.reshape(up_shape[0], rank, *up_shape[1:]).contiguous(),
        alpha=alpha,
        dora_scale=dora_scale,
    )
    return Factorised(weights, retained, excess_error_bound(spectrum, kept))


def factor_shapes(weights: ModuleWeights) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(down shape, up shape) of a module without the rank dimension."""
    return tuple(weights.down.shape[1:]), (weights.up.shape[0], *weights.up.shape[2:])
