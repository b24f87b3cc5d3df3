"""convert: .ckpt to .safetensors without running pickled code, single file <-> diffusers folder, precision, pruning."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tool_helpers import model_outputs, run_tool

from library.models.loader import load_base_model
from library.tools.__main__ import main


@pytest.mark.slow
def test_ckpt_with_ema_to_pruned_fp16_safetensors(tiny_sd1, tmp_path):
    original = load_file(str(tiny_sd1.single_file))
    ema = {"model_ema.decay": torch.tensor(0.999), "model_ema.num_updates": torch.tensor(10)}
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {**original, **ema}, "global_step": 10}, ckpt)
    out = tmp_path / "model.safetensors"
    run_tool("convert", ckpt, "--save-precision", "fp16", "--out", out)
    converted = load_file(str(out))
    assert converted.keys() == original.keys()  # EMA entries pruned, every weight kept
    for key, tensor in converted.items():
        assert tensor.dtype == torch.float16
        torch.testing.assert_close(tensor, original[key].half(), msg=key)
    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata()["modelspec.architecture"] == "stable-diffusion-v1"


class _RunsCode:
    """Unpickling this calls a function: what a malicious .ckpt does (here a harmless print)."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_ckpt_that_runs_code_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(1)}, "payload": _RunsCode()}, ckpt)
    assert main(["convert", str(ckpt), "--out", str(tmp_path / "x.safetensors")]) == 2
    captured = capsys.readouterr()
    assert "unpickled code ran" not in captured.out
    message = captured.err.strip()
    assert message.startswith(f"error: {ckpt}: refused to load") and "\n" not in message
    assert not (tmp_path / "x.safetensors").exists()


def test_single_file_to_folder_and_back(tiny_sd1, tmp_path):
    folder = tmp_path / "as-diffusers"
    assert main(["convert", str(tiny_sd1.single_file), "--save-precision", "float", "--out", str(folder)]) == 0
    assert (folder / "model_index.json").is_file()
    assert [path.name for path in tmp_path.iterdir()] == [folder.name]  # no staging folder left
    back = tmp_path / "back.safetensors"
    assert main(["convert", str(folder), "--save-precision", "float", "--out", str(back)]) == 0
    original, round_trip = load_file(str(tiny_sd1.single_file)), load_file(str(back))
    assert round_trip.keys() == original.keys()
    for key, tensor in round_trip.items():
        assert torch.equal(tensor, original[key]), key
    # the folder loads into the same model as the original folder
    for ours, theirs in zip(model_outputs(load_base_model(folder)), model_outputs(load_base_model(tiny_sd1.folder))):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
