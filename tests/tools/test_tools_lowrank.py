"""The SVD arithmetic of resize, merge-loras and extract, against full SVDs of the matrices themselves."""

from __future__ import annotations

import pytest
import torch
from tool_helpers import module_update, relative_error

from library.networks.lora_file import ModuleWeights
from library.tools.lowrank import RankRule, dense_svd, factor_shapes, module_svd, randomized_svd, truncate
from library.tools.merge_loras import merge_modules


def _module(out: int, inputs: int, rank: int, seed: int, kernel: tuple[int, ...] = (), deficient: int = 0):
    """Random factors (3x3 conv when ``kernel``); ``deficient`` > 0 repeats up's columns so the update's rank is
    that much lower than the factors'."""
    generator = torch.Generator().manual_seed(seed)
    up = torch.randn(out, rank, generator=generator)
    if deficient:
        up[:, rank - deficient:] = up[:, :deficient] * 0.5
    down = torch.randn(rank, inputs, *kernel, generator=generator) / inputs**0.5
    return ModuleWeights(down, up.reshape(out, rank, *([1] * len(kernel))), float(rank) / 2, None)


SHAPES = {
    "tall": dict(out=96, inputs=40, rank=8),
    "wide": dict(out=24, inputs=160, rank=8),
    "rank above both sides": dict(out=6, inputs=5, rank=16),
    "rank above the input": dict(out=64, inputs=3, rank=8),
    "repeated columns": dict(out=48, inputs=64, rank=8, deficient=3),
    "3x3 conv": dict(out=32, inputs=16, rank=4, kernel=(3, 3)),
    "rank-deficient conv": dict(out=20, inputs=8, rank=6, kernel=(3, 3), deficient=2),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_low_rank_svd_equals_the_full_svd(shape):
    weights = _module(seed=1, **shape)
    full = torch.linalg.svdvals(module_update(weights))
    low = module_svd(weights)
    count = low.s.numel()
    assert count <= weights.rank
    torch.testing.assert_close(low.s, full[:count], rtol=1e-5, atol=1e-12 * float(full[0]))
    assert float(full[count:].sum()) < 1e-10 * float(full[0])  # nothing beyond the factors' rank
    assert low.energy == pytest.approx(float(full.square().sum()), rel=1e-12)
    # the singular vectors are orthonormal and rebuild the update
    torch.testing.assert_close(low.u.T @ low.u, torch.eye(count, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(low.vh @ low.vh.T, torch.eye(count, dtype=torch.float64), atol=1e-10, rtol=0)
    rebuilt = low.u @ torch.diag(low.s) @ low.vh
    assert relative_error(rebuilt, module_update(weights)) < 1e-12


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_truncations_equal_the_full_svds(shape):
    weights = _module(seed=2, **shape)
    down_shape, up_shape = factor_shapes(weights)
    numerical_rank = int((torch.linalg.svdvals(module_update(weights)) > 1e-9).sum())
    for rank in sorted({1, max(1, numerical_rank // 2), numerical_rank}):
        rule = RankRule(max_rank=rank)
        low = truncate(module_svd(weights), rule, down_shape, up_shape, weights.scale)
        full = truncate(dense_svd(module_update(weights)), rule, down_shape, up_shape, weights.scale)
        assert low.weights.rank == full.weights.rank == rank
        assert low.retained_energy == pytest.approx(full.retained_energy, rel=1e-9)
        assert relative_error(module_update(low.weights), module_update(full.weights)) < 1e-5
        assert low.weights.down.shape == (rank, *down_shape) and low.weights.up.shape == (up_shape[0], rank,
                                                                                          *up_shape[1:])


RULES = [
    RankRule(max_rank=3),
    *(RankRule(method="sv_ratio", parameter=value) for value in (1.5, 3.0, 10.0)),
    *(RankRule(method="sv_fro", parameter=value) for value in (0.5, 0.8, 0.95, 0.999)),
    *(RankRule(method="sv_cumulative", parameter=value) for value in (0.3, 0.6, 0.9)),
    RankRule(max_rank=2, method="sv_fro", parameter=0.99),
]


def test_dynamic_rank_choices_are_identical():
    choices = []
    for seed, shape in enumerate(SHAPES.values()):
        weights = _module(seed=10 + seed, **shape)
        low, full = module_svd(weights).s, torch.linalg.svdvals(module_update(weights))
        for rule in RULES:
            assert rule.choose(low) == rule.choose(full), (shape, rule)
            choices.append(rule.choose(low))
    assert len(set(choices)) > 3  # the rules really choose different ranks


def test_svd_merge_equals_the_full_svd_of_the_weighted_sum():
    first, second = _module(40, 56, 4, seed=3), _module(40, 56, 6, seed=4)
    expected = module_update(first) * 0.8 - module_update(second) * 0.5
    for rank in (2, 5, 10):
        merged, energy = merge_modules([{"m": first}, {"m": second}], [0.8, -0.5], "svd", rank, None)
        reference = truncate(dense_svd(expected), RankRule(max_rank=rank), (56,), (40,))
        assert merged["m"].rank == rank
        assert energy["m"] == pytest.approx(reference.retained_energy, rel=1e-6)  # the stacked factors are float32
        assert relative_error(module_update(merged["m"]), module_update(reference.weights)) < 1e-5
    assert energy["m"] == pytest.approx(1.0)  # rank 10 = 4 + 6 holds the sum exactly


def _decaying(out: int, inputs: int, decay: float, seed: int) -> torch.Tensor:
    """A full-rank matrix whose singular values fall geometrically (``decay`` per index)."""
    generator = torch.Generator().manual_seed(seed)
    left, _ = torch.linalg.qr(torch.randn(out, min(out, inputs), generator=generator, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(inputs, min(out, inputs), generator=generator, dtype=torch.float64))
    values = decay ** torch.arange(min(out, inputs), dtype=torch.float64)
    return left @ torch.diag(values) @ right.T


@pytest.mark.parametrize(
    "out,inputs,decay,rank,oversample,iterations",
    [(200, 120, 0.9, 8, 4, 0), (120, 300, 0.95, 16, 10, 2), (256, 256, 0.97, 4, 2, 1), (90, 70, 0.999, 8, 6, 1)],
)
def test_randomized_error_is_within_the_reported_bound(out, inputs, decay, rank, oversample, iterations):
    matrix = _decaying(out, inputs, decay, seed=out)
    result = truncate(randomized_svd(matrix, rank, oversample, iterations), RankRule(max_rank=rank), (inputs,), (out,))
    actual = relative_error(module_update(result.weights), matrix)
    assert actual == pytest.approx(result.relative_error, abs=1e-6)  # the reported error is the real one
    singular = torch.linalg.svdvals(matrix)
    exact = float((singular[rank:].square().sum() / singular.square().sum()).sqrt())
    assert exact <= actual + 1e-9
    assert actual - exact <= result.excess_error_bound + 1e-6
    assert 0 < result.excess_error_bound < 1


def test_randomized_svd_is_exact_when_the_matrix_is_small_or_low_rank():
    small = _decaying(12, 10, 0.8, seed=1)
    spectrum = randomized_svd(small, 4, 10, 2)  # the search space would not be smaller than the matrix
    assert spectrum.unresolved == 0 and spectrum.s.numel() == 10
    low_rank = module_update(_module(80, 60, 4, seed=5))
    result = truncate(randomized_svd(low_rank, 4, 4, 1), RankRule(max_rank=4), (60,), (80,))
    assert result.retained_energy == pytest.approx(1.0, abs=1e-12)
    assert result.excess_error_bound < 1e-6
    assert relative_error(module_update(result.weights), low_rank) < 1e-6
