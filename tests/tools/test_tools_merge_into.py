"""merge-into: the merged checkpoint behaves like the base with the LoRA applied at run time."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from tool_helpers import model_outputs, relative_error, run_tool

from library.models.loader import load_base_model
from library.networks import LoraOptions, inject_lora, read_lora_file


@pytest.mark.slow
def test_merged_checkpoint_equals_base_plus_lora_at_run_time(tiny_sd1, lora_factory, tmp_path):
    lora = lora_factory("sd1", "style", seed=3)
    out = tmp_path / "merged.safetensors"
    result = run_tool(
        "merge-into", tiny_sd1.single_file, lora, "--ratios", "0.7", "--save-precision", "float", "--out", out
    )
    assert "merged.safetensors" in result.stdout

    merged = load_base_model(out)
    live = load_base_model(tiny_sd1.single_file)
    network = inject_lora(live.family, live.unet, live.text_encoders, LoraOptions(dim=4, alpha=2.0))
    network.load_kohya(read_lora_file(lora)[0])
    network.set_multiplier(0.7)
    base = load_base_model(tiny_sd1.single_file)

    for merged_out, live_out, base_out in zip(model_outputs(merged), model_outputs(live), model_outputs(base)):
        assert relative_error(merged_out, live_out) < 1e-4
        assert relative_error(base_out, live_out) > 1e-3  # the LoRA really changes the output

    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert metadata["modelspec.title"] == "merged"
    recipe = json.loads(metadata["furnace.tool"])
    assert recipe["loras"] == [{"file": "style.safetensors", "ratio": 0.7}]


@pytest.mark.slow
def test_two_loras_and_fp16_output(tiny_sd1, lora_factory, tmp_path):
    first, second = lora_factory("sd1", "a", seed=1), lora_factory("sd1", "b", seed=2, dim=2, alpha=1.0, conv_dim=2)
    out = tmp_path / "both.safetensors"
    run_tool("merge-into", tiny_sd1.single_file, first, second, "--ratios", "1", "-0.5", "--out", out)
    with safe_open(str(out), framework="pt") as handle:
        dtypes = {handle.get_tensor(key).dtype for key in handle.keys()}
    assert dtypes == {torch.float16}
    merged, base = load_base_model(out), load_base_model(tiny_sd1.single_file)
    assert relative_error(model_outputs(merged)[1], model_outputs(base)[1]) > 1e-3


@pytest.mark.slow
def test_wrong_ratio_count_and_wrong_family_are_one_line_errors(tiny_sd1, tiny_model_factory, lora_factory, tmp_path):
    lora = lora_factory("sd1", "a")
    result = run_tool(
        "merge-into", tiny_sd1.single_file, lora, "--ratios", "1", "2", "--out", tmp_path / "x.safetensors", check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --ratios: got 2 value(s) for 1 LoRAs; give one per LoRA"
    sdxl_lora = lora_factory("sdxl", "xl")
    result = run_tool("merge-into", tiny_sd1.single_file, sdxl_lora, "--out", tmp_path / "y.safetensors", check=False)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sdxl LoRA cannot merge into the sd1 model" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "y.safetensors").exists()


def test_sdxl_lora_with_sgm_names_merges_like_run_time(tiny_model_factory, lora_factory, tmp_path):
    from library.tools.__main__ import main

    tiny_sdxl = tiny_model_factory("sdxl")
    lora = lora_factory("sdxl", "xl", seed=4)
    out = tmp_path / "xl-merged.safetensors"
    assert (
        main(["merge-into", str(tiny_sdxl.single_file), str(lora), "--save-precision", "float", "--out", str(out)]) == 0
    )
    merged, live = load_base_model(out), load_base_model(tiny_sdxl.single_file)
    network = inject_lora(live.family, live.unet, live.text_encoders, LoraOptions(dim=4, alpha=2.0))
    network.load_kohya(read_lora_file(lora)[0])
    # every adapted weight of the merged file equals base + delta as the live peft layer computes it
    for kohya_name, layer in network.modules.items():
        target = network.targets[kohya_name]
        root = merged.unet if target.is_unet else merged.text_encoders[target.component]
        expected = layer.get_base_layer().weight + layer.get_delta_weight("default")
        torch.testing.assert_close(root.get_submodule(target.path).weight, expected, rtol=1e-5, atol=1e-6)
    assert any(name.startswith("lora_unet_input_blocks_") for name in network.modules)
