"""LyCORIS LoKr files in the tools: merge-into adds the update LyCORIS computes (and the live adapters apply),
inspect reports them, resize and merge-loras refuse them in one line."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from lycoris.functional.lokr import diff_weight
from safetensors.torch import load_file
from tool_helpers import model_outputs, relative_error

from library.models.loader import load_base_model
from library.networks import LoraOptions, inject_lora
from library.tools.__main__ import main

LAYOUTS = {
    "factorized": {"module": "lokr", "dim": 2, "alpha": 1.0, "conv_dim": 2, "conv_alpha": 3.0},
    "full-matrix": {"module": "lokr", "dim": 4, "alpha": 2.0, "lokr_factor": 8, "lokr_full_matrix": True},
}


def _lycoris_update(tensors: dict[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    parts = [tensors.get(f"{name}.lokr_{part}") for part in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b")]
    return diff_weight(*parts, None, gamma=tensors[f"{name}.alpha"], backend="torch").reshape(shape)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lokr_merge_into_adds_lycoris_update_as_the_live_adapters_apply_it(tiny_sd1, lora_factory, tmp_path, layout):
    lokr = lora_factory("sd1", "lokr", seed=5, **LAYOUTS[layout])
    tensors = load_file(str(lokr))
    out = tmp_path / "merged.safetensors"
    args = ["merge-into", tiny_sd1.single_file, lokr, "--ratios", "0.7", "--save-precision", "float", "--out", out]
    assert main([str(arg) for arg in args]) == 0

    merged, live = load_base_model(out), load_base_model(tiny_sd1.single_file)
    network = inject_lora(live.family, live.unet, live.text_encoders, LoraOptions(**LAYOUTS[layout]))
    assert {key.split(".")[0] for key in tensors} == network.modules.keys()
    for name, target in network.targets.items():
        original = network.modules[name].get_base_layer().weight
        expected = original + 0.7 * _lycoris_update(tensors, name, original.shape)
        root = merged.unet if target.is_unet else merged.text_encoders[target.component]
        actual = root.get_submodule(target.path).weight.detach()
        assert relative_error(actual - original, expected - original) < 1e-5, name
    network.load_file(lokr)
    network.set_multiplier(0.7)
    for merged_out, live_out in zip(model_outputs(merged), model_outputs(live)):
        assert relative_error(merged_out, live_out) < 1e-4


def test_lokr_inspect_reports_algo_factor_and_ranks_and_rank_tools_refuse(lora_factory, tmp_path, capsys):
    lokr = lora_factory("sd1", "lokr", module="lokr", dim=4, alpha=1.0, lokr_factor=4, conv_dim=2)
    tensors = load_file(str(lokr))
    names = {key.split(".")[0] for key in tensors}
    ranks = Counter(str(tensor.shape[0]) for key, tensor in tensors.items() if key.endswith(".lokr_w2_b"))
    whole = sum(key.endswith(".lokr_w2") for key in tensors)
    assert set(ranks) == {"2", "4"} and whole  # conv and linear ranks, and modules stored whole, are all reported
    assert main(["inspect", str(lokr), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["kind"], report["algo"], report["factor"]) == ("LoKr", "lokr", 4)
    assert report["module_count"] == len(names) and report["family"] == "sd1"
    assert report["rank_histogram"] == {"2": ranks["2"], "4": ranks["4"], "full": whole}
    assert report["hashes"]["verified"] is True
    assert main(["inspect", str(lokr)]) == 0
    text = capsys.readouterr().out
    assert "algo: lokr, factor 4" in text and f"ranks: 2 x{ranks['2']}, 4 x{ranks['4']}, full x{whole}" in text

    assert main(["resize", str(lokr), "--rank", "1", "--out", str(tmp_path / "r.safetensors")]) == 2
    assert main(["merge-loras", str(lokr), "--out", str(tmp_path / "m.safetensors")]) == 2
    resize_error, merge_error = capsys.readouterr().err.strip().splitlines()[-2:]
    for line, action in ((resize_error, "resize"), (merge_error, "combine")):
        assert line.startswith(f"error: {lokr}: module lora_") and line.split()[3] in names
        assert line.endswith(f"is LoKr (lokr_* keys), which has no LoRA factors to {action}; "
                             "merge it into a model with merge-into instead")
    assert not (tmp_path / "r.safetensors").exists() and not (tmp_path / "m.safetensors").exists()
