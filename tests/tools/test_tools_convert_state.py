"""convert from a DreamBooth run's state folder: the EMA UNet (what the run's checkpoint holds) or the raw one."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from trainer_cli import base_args, run_cli

from library.models.loader import load_base_model
from library.tools.__main__ import main


@pytest.mark.slow
def test_state_folder_exports_ema_or_raw_weights(tiny_sd1, small_dataset, tmp_path, capsys):
    output = tmp_path / "out"
    args = base_args(tiny_sd1.folder, small_dataset, output, output_name="db", max_train_steps=3,
                     instance_prompt="a photo of frnc", use_ema="true", save_state_on_train_end="true")
    run_cli("train_dreambooth.py", [*args, "--dreambooth.ema_decay", "0.5"])
    state = output / "state"

    ema, raw = tmp_path / "ema.safetensors", tmp_path / "raw.safetensors"
    assert main(["convert", str(state), "--save-precision", "float", "--out", str(ema)]) == 0  # default: EMA
    assert main(["convert", str(state), "--weights", "raw", "--save-precision", "float", "--out", str(raw)]) == 0

    # the run's checkpoint is the EMA one: exporting the state's EMA reproduces it exactly
    checkpoint, exported = load_file(str(output / "db.safetensors")), load_file(str(ema))
    with safe_open(str(output / "db.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert (metadata["ss_weights"], metadata["ss_ema_decay"], metadata["ss_ema_update_every"]) == ("ema", "0.5", "1")
    assert exported.keys() == checkpoint.keys()
    assert all(torch.equal(exported[key], checkpoint[key]) for key in checkpoint)
    # the raw export carries the trained UNet the state saved, and differs from the average
    trained = load_file(str(state / "model.safetensors"))
    raw_unet = load_base_model(raw).unet.state_dict()
    assert all(torch.equal(raw_unet[key], trained[key]) for key in trained)
    ema_unet = load_base_model(ema).unet.state_dict()
    assert any(not torch.equal(ema_unet[key], trained[key]) for key in trained)
    with safe_open(str(raw), framework="pt") as handle:
        recipe = json.loads(handle.metadata()["furnace.tool"])
    assert recipe["weights"] == "raw" and recipe["base"] == "db.safetensors"

    (state / "ema.safetensors").unlink()
    assert main(["convert", str(state), "--weights", "ema", "--out", str(tmp_path / "x.safetensors")]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == f"error: {state}: the state has no EMA weights (dreambooth.use_ema was off); use --weights raw"


def test_options_for_state_folders_only(tiny_sd1, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    assert main(["convert", str(tiny_sd1.single_file), "--weights", "raw", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --weights and --base apply to a run's state folder only"
    assert not out.exists()
