"""inspect: family, kind, ranks, keys, metadata and verified hashes of LoRAs; checkpoints and folders too."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tool_helpers import run_tool

from library.tools.__main__ import main


@pytest.mark.slow
def test_lora_report_as_json(lora_factory):
    lora = lora_factory("sd1", "a", dim=4, alpha=2.0, conv_dim=2)
    report = json.loads(run_tool("inspect", lora, "--json").stdout)
    tensors = load_file(str(lora))
    assert report["type"] == "lora" and report["family"] == "sd1" and report["kind"] == "LoCon"
    assert report["key_count"] == len(tensors)
    assert report["module_count"] == sum(key.endswith(".lora_down.weight") for key in tensors)
    assert set(report["rank_histogram"]) == {"2", "4"}
    down_rank = {key.removesuffix(".lora_down.weight"): t.shape[0] for key, t in tensors.items() if "lora_down" in key}
    assert report["ranks"] == down_rank
    assert report["hashes"]["verified"] is True
    assert report["metadata"]["ss_network_dim"] == "4"


def test_sdxl_lora_names_and_family(lora_factory, capsys):
    lora = lora_factory("sdxl", "xl")
    assert main(["inspect", str(lora), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "sdxl"
    assert any(name.startswith("lora_unet_input_blocks_") for name in report["ranks"])
    assert any(name.startswith("lora_te2_text_model_encoder_layers_") for name in report["ranks"])


def test_a_diffusers_layout_sdxl_file_without_our_metadata_reads_by_its_keys(lora_factory, tmp_path, capsys):
    """As diffusers' save_lora_weights writes it: the LoRA config entry only, no modelspec or ss_ entries."""
    lora = lora_factory("sdxl", "xl", dim=4, alpha=2.0, conv_dim=2, conv_alpha=3.0, save_format="diffusers")
    bare = tmp_path / "bare.safetensors"
    with safe_open(str(lora), framework="pt") as handle:
        entry = handle.metadata()["lora_adapter_metadata"]
    save_file(load_file(str(lora)), str(bare), {"lora_adapter_metadata": entry})
    assert main(["inspect", str(bare), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["family"], report["layout"]) == ("sdxl", "diffusers")
    assert any(name.startswith("lora_unet_input_blocks_") for name in report["ranks"])
    assert set(report["alphas"].values()) == {2.0, 3.0}


def test_tampered_lora_fails_verification(lora_factory, tmp_path, capsys):
    lora = lora_factory("sd1", "a")
    tensors = load_file(str(lora))
    from safetensors import safe_open

    with safe_open(str(lora), framework="pt") as handle:
        metadata = handle.metadata()
    first = next(key for key in tensors if key.endswith("lora_up.weight"))
    tensors[first] = tensors[first] * 2
    tampered = tmp_path / "tampered.safetensors"
    save_file(tensors, str(tampered), metadata=metadata)
    capsys.readouterr()  # drop what building the LoRA logged
    assert main(["inspect", str(tampered)]) == 2
    captured = capsys.readouterr()
    assert "hashes: MISMATCH" in captured.out
    assert captured.err.strip() == (
        f"error: {tampered}: stored hashes do not match the tensors " "(the file was modified or is corrupt)"
    )


def test_checkpoint_and_folder(tiny_sd1, capsys):
    assert main(["inspect", str(tiny_sd1.single_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["type"] == "checkpoint" and report["family"] == "sd1" and report["ema_keys"] == 0
    assert report["key_count"] == len(load_file(str(tiny_sd1.single_file)))
    assert main(["inspect", str(tiny_sd1.folder)]) == 0
    assert "diffusers, family sd1" in capsys.readouterr().out
