"""resize: full rank is lossless, lower ranks keep the best approximation and report its energy."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tool_helpers import lora_deltas, module_update, relative_error, run_tool

from library.networks import read_lora_file, verify_hashes
from library.tools.__main__ import main
from library.tools.common import read_lora_modules, write_lora
from library.tools.lowrank import RankRule, dense_svd, factor_shapes, truncate
from library.tools.resize import resize_modules


@pytest.mark.slow
def test_full_rank_is_lossless(lora_factory, tmp_path):
    lora = lora_factory("sd1", "a", dim=4, alpha=2.0, conv_dim=2)
    out = tmp_path / "same.safetensors"
    result = run_tool("resize", lora, "--rank", "4", "--save-precision", "float", "--json", "--out", out)
    report = json.loads(result.stdout)["modules"]
    assert all(row["energy"] == pytest.approx(1.0) and row["new_rank"] == row["rank"] for row in report)
    before, after = lora_deltas(lora), lora_deltas(out)
    assert before.keys() == after.keys()
    for name, delta in before.items():
        assert relative_error(after[name], delta) < 1e-5, name
    assert verify_hashes(out)


def test_lower_rank_reports_energy_of_the_best_approximation(lora_factory):
    modules, _, _ = read_lora_modules(lora_factory("sd1", "a", dim=4, alpha=2.0))
    resized, report = resize_modules(modules, RankRule(max_rank=2))
    for row in report:
        original, smaller = module_update(modules[row["module"]]), module_update(resized[row["module"]])
        assert row["new_rank"] == 2 and 0 < row["energy"] < 1
        # the discarded share of energy is exactly what the truncation error holds (Eckart-Young)
        assert relative_error(smaller, original) == pytest.approx((1 - row["energy"]) ** 0.5, rel=1e-3)
        singular = torch.linalg.svdvals(original.double())
        best = float((singular[:2] ** 2).sum() / (singular**2).sum())
        assert row["energy"] == pytest.approx(best, rel=1e-6)
    # alpha/rank is kept, so strengths mean the same
    assert all(weights.scale == pytest.approx(0.5) for weights in resized.values())


@pytest.mark.parametrize("method,parameter", [("sv_ratio", 2.0), ("sv_fro", 0.8), ("sv_cumulative", 0.6)])
def test_dynamic_methods_choose_per_module_ranks(lora_factory, method, parameter):
    modules, _, _ = read_lora_modules(lora_factory("sd1", "a", dim=4, alpha=4.0))
    _, report = resize_modules(modules, RankRule(max_rank=None, method=method, parameter=parameter))
    for row in report:
        singular = torch.linalg.svdvals(module_update(modules[row["module"]]).double())
        rank = row["new_rank"]
        if method == "sv_ratio":
            assert singular[rank - 1] >= singular[0] / parameter
            assert rank == 4 or singular[rank] < singular[0] / parameter
        elif method == "sv_fro":
            kept = float((singular[:rank] ** 2).sum().sqrt() / (singular**2).sum().sqrt())
            assert kept >= parameter - 1e-9
        else:
            assert float(singular[:rank].sum() / singular.sum()) >= parameter - 1e-9
    assert len({row["new_rank"] for row in report}) >= 1 and any(row["new_rank"] < 4 for row in report)


def test_bad_options_are_one_line_errors(lora_factory, tmp_path, capsys):
    lora = lora_factory("sd1", "a")
    assert main(["resize", str(lora), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert (
        main(
            [
                "resize",
                str(lora),
                "--dynamic",
                "sv_fro",
                "--dynamic-param",
                "2",
                "--out",
                str(tmp_path / "x.safetensors"),
            ]
        )
        == 2
    )
    assert (
        main(["resize", str(tmp_path / "missing.safetensors"), "--rank", "2", "--out", str(tmp_path / "x.safetensors")])
        == 2
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: give --rank R, --dynamic METHOD --dynamic-param P, or both"
    assert lines[1] == "error: --dynamic-param for sv_fro must be in (0, 1], got 2.0"
    assert lines[2].startswith("error: LoRA file") and "missing.safetensors does not exist" in lines[2]
    assert not (tmp_path / "x.safetensors").exists()


def test_resized_locon_metadata_follows_the_new_ranks(lora_factory, tmp_path):
    lora = lora_factory("sd1", "locon", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)
    out = tmp_path / "small.safetensors"
    assert main(["resize", str(lora), "--rank", "1", "--save-precision", "float", "--out", str(out)]) == 0
    metadata = read_lora_file(out)[1]
    # alpha/rank is kept per module: 2/4 for the Linear and 1x1 modules, 1/2 for the 3x3 convs
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("1", "0.5")
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "1", "conv_alpha": "0.5"}
    ranks = {weights.rank for weights in read_lora_modules(out)[0].values()}
    assert ranks == {1}

    dynamic = tmp_path / "dynamic.safetensors"
    args = ["resize", str(lora), "--dynamic", "sv_fro", "--dynamic-param", "0.7", "--out", str(dynamic)]
    assert main(args) == 0
    modules, metadata, _ = read_lora_modules(dynamic)
    conv_ranks = {weights.rank for name, weights in modules.items() if weights.down.shape[2:] == (3, 3)}
    expected_conv = str(conv_ranks.pop()) if len(conv_ranks) == 1 else "Dynamic"
    assert json.loads(metadata["ss_network_args"])["conv_dim"] == expected_conv
    assert metadata["ss_network_dim"] in {"Dynamic", *{str(w.rank) for w in modules.values()}}


@pytest.mark.parametrize("rule", [["--rank", "2"], ["--dynamic", "sv_fro", "--dynamic-param", "0.8"]])
@pytest.mark.slow
def test_low_rank_path_merges_like_the_full_svd(tiny_sd1, lora_factory, tmp_path, rule):
    """The resized file (SVD from the factors) and one made with full SVDs of the updates bake into the same model."""
    lora = lora_factory("sd1", "dora", seed=7, dim=4, alpha=2.0, conv_dim=3, conv_alpha=1.5, use_dora=True)
    resized = tmp_path / "resized.safetensors"
    run_tool("resize", lora, *rule, "--save-precision", "float", "--out", resized)

    modules, metadata, _ = read_lora_modules(lora)
    rank_rule = RankRule(max_rank=2) if rule[0] == "--rank" else RankRule(method="sv_fro", parameter=0.8)
    reference = {}
    for name, weights in modules.items():
        down_shape, up_shape = factor_shapes(weights)
        full = dense_svd(module_update(weights))  # the whole out x in update
        reference[name] = truncate(full, rank_rule, down_shape, up_shape, weights.scale, weights.dora_scale).weights
    reference_file = tmp_path / "reference.safetensors"
    write_lora(reference_file, reference, metadata, torch.float32)

    ranks = {name: weights.rank for name, weights in read_lora_modules(resized)[0].items()}
    assert ranks == {name: weights.rank for name, weights in reference.items()}
    merged = {}
    for name, path in (("resized", resized), ("reference", reference_file)):
        merged[name] = tmp_path / f"merged-{name}.safetensors"
        args = ["merge-into", tiny_sd1.single_file, path, "--save-precision", "float", "--out", merged[name]]
        assert main([str(arg) for arg in args]) == 0
    ours, theirs, base = (load_file(str(path)) for path in (*merged.values(), tiny_sd1.single_file))
    assert ours.keys() == theirs.keys()
    for key, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[key], rtol=1e-5, atol=1e-6, msg=key)
    assert sum(not torch.equal(tensor, base[key]) for key, tensor in ours.items()) >= len(modules)
