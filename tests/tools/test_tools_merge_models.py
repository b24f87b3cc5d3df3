"""merge-models: weighted sum, add-difference and block weights, checked tensor by tensor."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tool_helpers import run_tool

from library.models.tiny import write_tiny_model
from library.tools.__main__ import main
from library.tools.merge_models import block_label, block_labels


@pytest.fixture
def second_model(tmp_path):
    path = tmp_path / "other.safetensors"
    write_tiny_model("sd1", tmp_path / "other", path, seed=5)
    return path


def test_block_labels_follow_the_usual_convention():
    assert block_label("model.diffusion_model.input_blocks.4.1.proj_in.weight") == "IN04"
    assert block_label("model.diffusion_model.middle_block.1.norm.weight") == "M00"
    assert block_label("model.diffusion_model.output_blocks.11.0.skip_connection.weight") == "OUT11"
    assert block_label("model.diffusion_model.time_embed.0.weight") is None
    keys = [f"model.diffusion_model.input_blocks.{i}.x" for i in (10, 2, 0)] + [
        "model.diffusion_model.middle_block.0.x"
    ]
    assert block_labels(keys + ["model.diffusion_model.output_blocks.1.x"]) == ["IN00", "IN02", "IN10", "M00", "OUT01"]


@pytest.mark.slow
def test_weighted_sum(tiny_sd1, second_model, tmp_path):
    out = tmp_path / "sum.safetensors"
    run_tool(
        "merge-models", tiny_sd1.single_file, second_model, "--alpha", "0.25", "--save-precision", "float", "--out", out
    )
    a, b, merged = load_file(str(tiny_sd1.single_file)), load_file(str(second_model)), load_file(str(out))
    assert merged.keys() == a.keys()
    for key, tensor in merged.items():
        torch.testing.assert_close(tensor, a[key] * 0.75 + b[key] * 0.25, msg=key)
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1"
    assert json.loads(metadata["furnace.tool"])["alpha"] == 0.25


def test_add_difference_with_block_weights(tiny_sd1, second_model, tmp_path, capsys):
    a = load_file(str(tiny_sd1.single_file))
    labels = block_labels(list(a))
    weights = ["1" if label.startswith("OUT") else "0" for label in labels]
    out = tmp_path / "blocks.safetensors"
    assert (
        main(
            [
                "merge-models",
                str(tiny_sd1.single_file),
                str(second_model),
                "--c",
                str(tiny_sd1.single_file),
                "--alpha",
                "0.5",
                "--block-weights",
                ",".join(weights),
                "--save-precision",
                "float",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    b, merged = load_file(str(second_model)), load_file(str(out))
    for key, tensor in merged.items():
        label = block_label(key)
        factor = 0.5 if label is None else (1.0 if label.startswith("OUT") else 0.0)
        torch.testing.assert_close(tensor, a[key] + (b[key] - a[key]) * factor, msg=key)
    assert (
        main(
            ["merge-models", str(tiny_sd1.single_file), str(second_model), "--block-weights", "1,2", "--out", str(out)]
        )
        == 2
    )
    assert f"this model has {len(labels)} blocks (IN00..{labels[-1]})" in capsys.readouterr().err


def test_diffusers_folder_inputs_equal_single_file_inputs(tiny_sd1, second_model, tmp_path):
    from_files, from_folder = tmp_path / "files.safetensors", tmp_path / "folder.safetensors"
    common = ["--c", str(second_model), "--alpha", "0.3", "--save-precision", "float"]
    assert main(["merge-models", str(tiny_sd1.single_file), str(second_model), *common, "--out", str(from_files)]) == 0
    assert main(["merge-models", str(tiny_sd1.folder), str(second_model), *common, "--out", str(from_folder)]) == 0
    expected, actual = load_file(str(from_files)), load_file(str(from_folder))
    assert actual.keys() == expected.keys()
    for key, tensor in actual.items():
        assert torch.equal(tensor, expected[key]), key
    with safe_open(str(from_folder), framework="pt") as handle:
        assert json.loads(handle.metadata()["furnace.tool"])["a"] == tiny_sd1.folder.name


def test_a_folder_the_loader_must_read_whole_merges_like_its_single_file(tiny_sd1, second_model, tmp_path):
    """A component saved as pytorch_model.bin cannot be streamed: the folder is read through the loader instead."""
    folder = tmp_path / "bin-folder"
    shutil.copytree(tiny_sd1.folder, folder)
    weights = folder / "text_encoder" / "model.safetensors"
    torch.save(load_file(str(weights)), folder / "text_encoder" / "pytorch_model.bin")
    weights.unlink()
    outputs = {}
    for name, a in (("folder", folder), ("file", tiny_sd1.single_file)):
        outputs[name] = tmp_path / f"{name}.safetensors"
        args = [str(a), str(second_model), "--alpha", "0.3", "--save-precision", "float", "--out", str(outputs[name])]
        assert main(["merge-models", *args]) == 0
    expected, actual = load_file(str(outputs["file"])), load_file(str(outputs["folder"]))
    assert actual.keys() == expected.keys()
    for key, tensor in actual.items():
        assert torch.equal(tensor, expected[key]), key


def test_mismatched_models_are_one_line_errors_and_leave_no_file(tiny_sd1, lora_factory, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    lora = lora_factory("sd1", "a")
    assert main(["merge-models", str(tiny_sd1.single_file), str(lora), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {lora}: does not match the sd1 layout")
    # a tensor missing from B is found while the output is being written: the partial file is removed
    tensors = load_file(str(tiny_sd1.single_file))
    missing = "first_stage_model.decoder.conv_out.bias"
    del tensors[missing]
    incomplete = tmp_path / "incomplete.safetensors"
    save_file(tensors, str(incomplete))
    assert main(["merge-models", str(tiny_sd1.single_file), str(incomplete), "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"error: {missing}: missing or a different shape in model B; the models do not match")
    assert list(tmp_path.glob("x.safetensors*")) == []
