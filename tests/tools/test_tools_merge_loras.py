"""merge-loras: concat is exact, svd is exact at sufficient rank and reports energy, sum needs equal ranks."""

from __future__ import annotations

import pytest
import torch
from tool_helpers import lora_deltas, module_update, relative_error, run_tool

from library.networks import verify_hashes
from library.networks.lora_file import ModuleWeights
from library.tools.__main__ import main
from library.tools.common import read_lora_modules
from library.tools.merge_loras import merge_modules


def _expected(first, second, ratios):
    deltas = [lora_deltas(path, ratio) for path, ratio in zip((first, second), ratios)]
    names = deltas[0].keys() | deltas[1].keys()
    return {name: sum(d[name] for d in deltas if name in d) for name in names}


@pytest.mark.slow
def test_concat_is_the_exact_weighted_sum(lora_factory, tmp_path):
    first = lora_factory("sd1", "a", seed=1, dim=4, alpha=2.0)
    second = lora_factory("sd1", "b", seed=2, dim=2, alpha=1.0, conv_dim=2)
    out = tmp_path / "concat.safetensors"
    run_tool(
        "merge-loras",
        first,
        second,
        "--ratios",
        "0.8",
        "-0.3",
        "--mode",
        "concat",
        "--save-precision",
        "float",
        "--out",
        out,
    )
    expected, merged = _expected(first, second, (0.8, -0.3)), lora_deltas(out)
    assert merged.keys() == expected.keys()
    for name, delta in expected.items():
        assert relative_error(merged[name], delta) < 1e-5, name
    assert verify_hashes(out)


def test_svd_mode_exact_at_full_rank_and_lossy_below(lora_factory):
    first, second = lora_factory("sd1", "a", seed=1), lora_factory("sd1", "b", seed=2)
    loras = [read_lora_modules(path)[0] for path in (first, second)]
    expected = _expected(first, second, (1.0, 0.5))
    full, energy = merge_modules(loras, [1.0, 0.5], "svd", rank=8, conv_rank=None)
    for name, weights in full.items():
        assert relative_error(module_update(weights), expected[name]) < 1e-5
    small, small_energy = merge_modules(loras, [1.0, 0.5], "svd", rank=2, conv_rank=None)
    assert all(weights.rank == 2 for weights in small.values())
    assert all(value == pytest.approx(1.0) for value in energy.values())
    assert all(0 < value < 1 for value in small_energy.values())


def test_sum_mode_is_exact_for_shared_down_and_refuses_rank_mismatch(tmp_path, capsys):
    generator = torch.Generator().manual_seed(0)
    down = torch.randn(4, 16, generator=generator)
    ups = [torch.randn(8, 4, generator=generator) for _ in range(2)]
    loras = [{"m": ModuleWeights(down, up, 2.0, None)} for up in ups]
    merged, _ = merge_modules(loras, [1.0, 0.25], "sum", rank=None, conv_rank=None)
    expected = sum(module_update(lora["m"]) * ratio for lora, ratio in zip(loras, (1.0, 0.25)))
    assert relative_error(module_update(merged["m"]), expected) < 1e-6

    from tool_helpers import make_lora_file

    first = make_lora_file("sd1", tmp_path / "a.safetensors", dim=4)
    second = make_lora_file("sd1", tmp_path / "b.safetensors", dim=2, alpha=1.0)
    assert (
        main(["merge-loras", str(first), str(second), "--mode", "sum", "--out", str(tmp_path / "s.safetensors")]) == 2
    )
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: ") and "ranks differ ([2, 4])" in message
