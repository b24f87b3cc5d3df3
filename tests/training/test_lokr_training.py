"""A LoKr run end to end: its file has LyCORIS's keys and metadata, the tools read it, a later run continues from it
(network_weights), and resuming its state equals one uninterrupted run, bit for bit."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from trainer_cli import base_args, run_cli, run_python

pytestmark = pytest.mark.slow  # these tests start trainers

LOKR = {
    "network.module": "lokr",
    "network_dim": 4,
    "network_alpha": 1,
    "network.lokr_factor": 4,
    "network.conv_dim": 2,
}
KEY = re.compile(r"^lora_(unet|te)_\w+\.(lokr_w1|lokr_w2|lokr_w2_a|lokr_w2_b|alpha)$")


def _args(tiny_model_factory, dataset, output, **overrides):
    return base_args(tiny_model_factory("sd1").folder, dataset, output, **{**LOKR, "max_train_steps": 4, **overrides})


@pytest.fixture(scope="module")
def lokr_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """One 4-step LoKr run that saved its state at the end."""
    output = tmp_path_factory.mktemp("lokr-run")
    run_cli("train_network.py", [*_args(tiny_model_factory, concept_dataset, output), "--save_state_on_train_end", "true"])
    return output


def test_lokr_file_has_lycoris_keys_and_metadata(lokr_run):
    path = lokr_run / "lora.safetensors"
    tensors = load_file(path)
    assert all(KEY.match(key) for key in tensors), [key for key in tensors if not KEY.match(key)][:3]
    modules = {key.split(".")[0] for key in tensors}
    assert all(f"{name}.lokr_w1" in tensors and f"{name}.alpha" in tensors for name in modules)
    assert any("resnets" in name for name in modules) and any(name.startswith("lora_te_") for name in modules)
    assert {"lokr_w2", "lokr_w2_a"} <= {key.split(".")[1] for key in tensors}  # whole and factorized modules
    last_factors = [tensor for key, tensor in tensors.items() if key.endswith((".lokr_w2_b", ".lokr_w2"))]
    assert all(bool(tensor.any()) for tensor in last_factors), "the zero-initialised factors were trained"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert (metadata["ss_network_module"], metadata["ss_network_dim"], metadata["ss_network_alpha"]) == (
        "lycoris.kohya", "4", "1.0"
    )
    assert json.loads(metadata["ss_network_args"]) == {"algo": "lokr", "factor": "4", "conv_dim": "2", "conv_alpha": "1.0"}

    report = json.loads(run_python(["-m", "library.tools", "inspect", str(path), "--json"], "inspect").stdout)
    assert (report["kind"], report["algo"], report["factor"]) == ("LoKr", "lokr", 4)
    assert report["module_count"] == len(modules) and report["hashes"]["verified"] is True


def test_resuming_a_lokr_run_equals_one_long_run(lokr_run, tiny_model_factory, concept_dataset, tmp_path):
    reference = tmp_path / "reference"
    run_cli("train_network.py", _args(tiny_model_factory, concept_dataset, reference, max_train_steps=6))
    staged = tmp_path / "staged"
    shutil.copytree(lokr_run, staged)
    run_cli("train_network.py", [*_args(tiny_model_factory, concept_dataset, staged, max_train_steps=6),
                                 "--resume", str(staged / "state")])
    resumed, expected = load_file(staged / "lora.safetensors"), load_file(reference / "lora.safetensors")
    assert resumed.keys() == expected.keys()
    different = [key for key in expected if not torch.equal(resumed[key], expected[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:2]}"


def test_a_run_continues_from_a_lokr_file(lokr_run, tiny_model_factory, concept_dataset, tmp_path):
    trained = lokr_run / "lora.safetensors"
    output = tmp_path / "continued"
    args = _args(tiny_model_factory, concept_dataset, output, max_train_steps=1, learning_rate=1e-9)
    run_cli("train_network.py", [*args, "--network_weights", str(trained)])
    before, after = load_file(trained), load_file(output / "lora.safetensors")
    assert before.keys() == after.keys()
    for key, tensor in before.items():  # one step at a negligible rate: the adapters started from the file
        torch.testing.assert_close(after[key], tensor, rtol=0, atol=1e-6)

    lora_args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "lora", max_train_steps=1)
    result = run_cli("train_network.py", [*lora_args, "--network_weights", str(trained)], check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("is LoKr; set network.module = 'lokr' to load it")
