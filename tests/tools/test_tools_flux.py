"""The LoRA tools on FLUX.1 files: ours in both layouts and other trainers' (sd-scripts, ai-toolkit/ComfyUI).

inspect names the family and layout; convert switches layouts exactly; merge-into, resize and merge-loras read
either layout and keep every module's update.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "networks"))
from flux_lora_helpers import flux_network, tiny_flux  # noqa: E402

from library.models.families import FLUX1_DEV  # noqa: E402
from library.models.loader import load_base_model  # noqa: E402
from library.networks import LoraOptions, lora_metadata, merge_lora_into  # noqa: E402
from library.networks.lora_file import split_modules  # noqa: E402
from library.networks.lora_layouts import kohya_keys  # noqa: E402
from library.networks.metadata import TrainingInfo  # noqa: E402
from library.tools.__main__ import main  # noqa: E402


@pytest.fixture(scope="module")
def flux_loras(tmp_path_factory) -> dict[str, Path]:
    """The same tiny FLUX.1-dev LoRA saved by the network in both layouts, with a run's metadata."""
    root = tmp_path_factory.mktemp("flux-loras")
    paths = {}
    for layout in ("kohya", "diffusers"):
        family, components = tiny_flux()
        options = LoraOptions(dim=2, alpha=1.0, save_format=layout)
        network = flux_network(family, components, options)
        info = TrainingInfo(output_name="flux", resolution=(64, 64), learning_rate=1e-4, training_started_at=time.time())
        paths[layout] = root / f"{layout}.safetensors"
        network.save(paths[layout], "float", lora_metadata(family, options, info))
    return paths


def _report(path: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def test_our_files_carry_the_family_record_and_both_hashes(flux_loras, capsys):
    for layout, path in flux_loras.items():
        report = _report(path, capsys)
        assert (report["family"], report["layout"]) == ("flux1-dev", layout)
        assert report["hashes"]["verified"] is True
        metadata = report["metadata"]
        assert metadata["modelspec.architecture"] == "flux-1-dev/lora"
        assert metadata["ss_base_model_version"] == "flux1"
        assert metadata["modelspec.implementation"] == "https://github.com/black-forest-labs/flux"
        assert "lora_unet_double_blocks_0_img_attn_qkv" in report["ranks"]  # shown in the kohya layout's names
        assert report["ranks"]["lora_unet_double_blocks_0_img_attn_qkv"] == 6


def test_other_trainers_files_without_metadata_are_named_flux(flux_loras, tmp_path, capsys):
    kohya = load_file(str(flux_loras["kohya"]))
    diffusers = load_file(str(flux_loras["diffusers"]))
    files = {
        "sd-scripts": {key: value for key, value in kohya.items() if key.startswith("lora_unet_")},
        "diffusers": diffusers,
        "ai-toolkit": {
            key.replace("transformer.", "diffusion_model.", 1): value
            for key, value in diffusers.items()
            if key.startswith("transformer.")
        },
    }
    for name, tensors in files.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        assert _report(path, capsys)["family"] == "flux1-dev", name
    schnell = tmp_path / "schnell.safetensors"
    save_file(files["sd-scripts"], str(schnell), metadata={"modelspec.architecture": "flux-1-schnell/lora",
                                                           "ss_base_model_version": "flux1"})
    assert _report(schnell, capsys)["family"] == "flux1-schnell"


def test_convert_switches_layouts_exactly(flux_loras, tmp_path, capsys):
    to_diffusers, back = tmp_path / "d.safetensors", tmp_path / "k.safetensors"
    assert main(["convert", str(flux_loras["kohya"]), "--layout", "diffusers", "--out", str(to_diffusers)]) == 0
    assert main(["convert", str(to_diffusers), "--layout", "kohya", "--out", str(back)]) == 0
    ours_diffusers, converted = load_file(str(flux_loras["diffusers"])), load_file(str(to_diffusers))
    assert set(converted) == set(ours_diffusers)
    assert all(torch.equal(converted[key], ours_diffusers[key]) for key in converted)
    alphas = "lora_adapter_metadata"
    assert _metadata(to_diffusers)[alphas] == _metadata(flux_loras["diffusers"])[alphas]
    assert alphas not in _metadata(back)
    original, round_trip = load_file(str(flux_loras["kohya"])), load_file(str(back))
    assert set(round_trip) == set(original)
    assert all(torch.equal(round_trip[key], original[key]) for key in original)
    assert _metadata(back)["modelspec.architecture"] == "flux-1-dev/lora"
    assert _report(back, capsys)["hashes"]["verified"] is True

    capsys.readouterr()
    assert main(["convert", str(flux_loras["kohya"]), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert capsys.readouterr().err.strip().endswith("is a LoRA: give --layout kohya or diffusers to rewrite it")


def _updates(path: Path) -> dict[str, torch.Tensor]:
    """Each kohya-layout module's update ``alpha/rank * up @ down`` of a FLUX file in either layout."""
    modules = split_modules(kohya_keys(FLUX1_DEV, load_file(str(path)), str(path)), str(path))
    return {name: weights.up.double() @ weights.down.double() * weights.scale for name, weights in modules.items()}


def test_resize_and_merge_loras_read_either_layout_and_keep_updates(flux_loras, tmp_path):
    expected = _updates(flux_loras["kohya"])
    resized = tmp_path / "resized.safetensors"
    assert main(["resize", str(flux_loras["diffusers"]), "--rank", "8", "--save-precision", "float",
                 "--out", str(resized)]) == 0
    updates = _updates(resized)
    assert set(updates) == set(expected)  # written in the kohya layout's (BFL) names
    assert "lora_adapter_metadata" not in _metadata(resized)  # the source's alphas entry, which diffusers would refuse
    for name, update in expected.items():
        torch.testing.assert_close(updates[name], update, rtol=1e-5, atol=1e-6)

    merged = tmp_path / "merged.safetensors"
    assert main(["merge-loras", str(flux_loras["kohya"]), str(flux_loras["diffusers"]), "--ratios", "1", "0.5",
                 "--save-precision", "float", "--out", str(merged)]) == 0
    for name, update in _updates(merged).items():
        torch.testing.assert_close(update, 1.5 * expected[name], rtol=1e-5, atol=1e-6)


def test_merge_into_a_flux_checkpoint_matches_our_merge_for_both_layouts(flux_loras, tiny_model_factory, tmp_path):
    base = tiny_model_factory("flux1-dev")
    reference = load_base_model(base.single_file, dtype=torch.float32)
    merge_lora_into(reference.family, reference.unet, reference.text_encoders,
                    load_file(str(flux_loras["kohya"])), 0.8)
    expected = reference.unet.state_dict()
    for layout, lora in flux_loras.items():
        out = tmp_path / f"merged-{layout}.safetensors"
        assert main(["merge-into", str(base.single_file), str(lora), "--ratios", "0.8", "--save-precision", "float",
                     "--out", str(out)]) == 0
        merged = load_base_model(out, dtype=torch.float32).unet.state_dict()
        for key, tensor in expected.items():
            torch.testing.assert_close(merged[key], tensor, rtol=1e-5, atol=1e-6, msg=f"{layout}: {key}")


def test_extract_recovers_a_merged_flux_lora_in_bfl_names(flux_loras, tiny_model_factory, tmp_path, capsys):
    """A base with a rank-2 LoRA merged in: extract at rank 2 finds the update again, written in the kohya/BFL layout,
    and merging the extracted file rebuilds the tuned transformer; a model against itself has nothing to extract."""
    base = tiny_model_factory("flux1-dev").single_file
    tuned, extracted, rebuilt = (tmp_path / f"{name}.safetensors" for name in ("tuned", "extracted", "rebuilt"))
    assert main(["merge-into", str(base), str(flux_loras["kohya"]), "--save-precision", "float",
                 "--out", str(tuned)]) == 0
    assert main(["extract", str(tuned), str(base), "--rank", "2", "--exact", "--save-precision", "float",
                 "--out", str(extracted)]) == 0
    with safe_open(str(extracted), framework="pt") as handle:
        modules = {key.split(".")[0] for key in handle.keys()}
    assert {"lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_0_linear1"} <= modules
    assert main(["merge-into", str(base), str(extracted), "--save-precision", "float", "--out", str(rebuilt)]) == 0
    expected = load_base_model(tuned, dtype=torch.float32).unet.state_dict()
    actual = load_base_model(rebuilt, dtype=torch.float32).unet.state_dict()
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=1e-4, atol=1e-5, msg=key)

    capsys.readouterr()
    assert main(["extract", str(base), str(base), "--rank", "2", "--out", str(tmp_path / "none.safetensors")]) == 2
    assert capsys.readouterr().err.strip().endswith("do not differ in any adaptable module; nothing to extract")
