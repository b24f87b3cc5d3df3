"""extract: from (base, base with a LoRA merged in) the SVD recovers that LoRA's update; randomized SVDs report an
error bound that holds."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from tool_helpers import lora_deltas, relative_error, run_tool

from library.models.loader import load_base_model
from library.models.tiny import write_tiny_model
from library.networks import LoraOptions, verify_hashes
from library.networks.targets import find_targets
from library.tools.__main__ import main

pytestmark = pytest.mark.slow  # these tests start processes or trainers


def test_extract_recovers_a_merged_locon(tiny_sd1, lora_factory, tmp_path):
    lora = lora_factory("sd1", "a", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)
    tuned = tmp_path / "tuned.safetensors"
    run_tool("merge-into", tiny_sd1.single_file, lora, "--save-precision", "float", "--out", tuned)
    out = tmp_path / "extracted.safetensors"
    run_tool(
        "extract",
        tuned,
        tiny_sd1.single_file,
        "--rank",
        "4",
        "--conv-rank",
        "2",
        "--save-precision",
        "float",
        "--out",
        out,
    )

    expected, recovered = lora_deltas(lora), lora_deltas(out)
    assert recovered.keys() == expected.keys()
    for name, delta in expected.items():
        assert relative_error(recovered[name], delta) < 1e-3, name
    assert verify_hashes(out)
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
        ranks = {handle.get_tensor(key).shape[0] for key in handle.keys() if key.endswith("lora_down.weight")}
    assert ranks <= {2, 4}
    assert metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert json.loads(metadata["furnace.tool"])["tuned"] == "tuned.safetensors"


def test_identical_models_have_nothing_to_extract(tiny_sd1, tmp_path):
    result = run_tool(
        "extract",
        tiny_sd1.single_file,
        tiny_sd1.folder,
        "--rank",
        "4",
        "--out",
        tmp_path / "x.safetensors",
        check=False,
    )
    assert result.returncode == 2
    assert "do not differ in any adaptable module" in result.stderr.strip().splitlines()[-1]


@torch.no_grad()
def _differences(tuned, base) -> dict[str, torch.Tensor]:
    """Each adaptable module's weight difference, flattened to 2-D, by kohya name."""
    tuned_model, base_model = load_base_model(tuned), load_base_model(base)
    differences = {}
    for target in find_targets(base_model.family, base_model.unet, base_model.text_encoders, LoraOptions()):
        roots = [(m.unet if target.is_unet else m.text_encoders[target.component]) for m in (tuned_model, base_model)]
        weights = [root.get_submodule(target.path).weight.double() for root in roots]
        differences[target.name] = (weights[0] - weights[1]).reshape(weights[0].shape[0], -1)
    return differences


def test_randomized_extract_is_within_its_reported_bound(tiny_sd1, lora_factory, tmp_path):
    """A full-rank difference (a LoRA plus 2 % of another model): the randomized SVD's error is the one reported, and
    exceeds the exact truncation's by no more than the reported bound; --exact reports the exact truncation."""
    other, noisy, tuned = (tmp_path / f"{name}.safetensors" for name in ("other", "noisy", "tuned"))
    write_tiny_model("sd1", tmp_path / "other", other, seed=5)
    lora = lora_factory("sd1", "a", dim=4, alpha=2.0)
    float32 = ["--save-precision", "float"]
    merge = ["merge-models", str(tiny_sd1.single_file), str(other), "--alpha", "0.02", *float32, "--out", str(noisy)]
    assert main(merge) == 0
    assert main(["merge-into", str(noisy), str(lora), *float32, "--out", str(tuned)]) == 0
    reports = {}
    for mode, flags in (("randomized", ["--oversample", "2", "--power-iterations", "1"]), ("exact", ["--exact"])):
        out = tmp_path / f"{mode}.safetensors"
        result = run_tool("extract", tuned, tiny_sd1.single_file, "--rank", "2", *flags, "--save-precision", "float",
                          "--json", "--out", out)
        reports[mode] = {row["module"]: row for row in json.loads(result.stdout)["modules"]}
        reports[mode + " file"] = lora_deltas(out)

    differences = _differences(tuned, tiny_sd1.single_file)
    assert reports["randomized"].keys() == reports["exact"].keys() == differences.keys()
    for name, difference in differences.items():
        singular = torch.linalg.svdvals(difference)
        exact = float(singular[2:].square().sum().sqrt() / singular.square().sum().sqrt())
        randomized, reference = reports["randomized"][name], reports["exact"][name]
        actual = relative_error(reports["randomized file"][name].double(), difference)
        assert actual == pytest.approx(randomized["error"], abs=1e-5), name
        assert actual - exact <= randomized["excess_bound"] + 1e-5, name
        assert reference["error"] == pytest.approx(exact, abs=1e-5) and reference["excess_bound"] == 0
        assert relative_error(reports["exact file"][name].double(), difference) == pytest.approx(exact, abs=1e-5)
    bounds = [row["excess_bound"] for row in reports["randomized"].values()]
    assert min(bounds) > 0  # every module went through the randomized SVD
