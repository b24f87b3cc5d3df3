"""convert: .ckpt to .safetensors without running pickled code, single file <-> diffusers folder, precision, pruning,
and a LoRA's layout (the diffusers layout read back by diffusers)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tool_helpers import model_outputs, run_tool

from library.models.families import get_family
from library.models.loader import load_base_model
from library.models.tiny import build_components, build_pipeline, tiny_configs
from library.networks import merge_lora_into, read_lora_file
from library.networks.lora_file import ModuleWeights
from library.tools.__main__ import main
from library.tools.common import read_lora_modules, write_lora


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


def test_a_flux_checkpoint_becomes_a_flux_pipeline_folder_with_its_flow_matching_scheduler(tiny_model_factory,
                                                                                          tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    tiny = tiny_model_factory("flux1-schnell")
    folder = tmp_path / "as-diffusers"
    assert main(["convert", str(tiny.single_file), "--save-precision", "float", "--out", str(folder)]) == 0
    pipeline = FluxPipeline.from_pretrained(folder, local_files_only=True)
    assert isinstance(pipeline.scheduler, FlowMatchEulerDiscreteScheduler)  # not an SD folder's DDIM
    assert not pipeline.scheduler.config.use_dynamic_shifting and pipeline.scheduler.config.shift == 1.0  # schnell's
    assert load_base_model(folder).family.name == "flux1-schnell"


def _varied_kohya_lora(lora_factory, family_name: str, path):
    """A kohya LoRA whose modules differ in rank and alpha (as after a dynamic resize), UNet and text encoders."""
    modules, metadata, _ = read_lora_modules(lora_factory(family_name, "uniform", dim=4, alpha=2.0, conv_dim=2))
    varied = {}
    for index, (name, weights) in enumerate(sorted(modules.items())):
        rank = weights.rank - 1 if index % 3 == 0 else weights.rank
        alpha = (1.0, 2.0, 3.0, 0.5)[index % 4]
        varied[name] = ModuleWeights(weights.down[:rank].clone(), weights.up[:, :rank].clone(), alpha, None)
    write_lora(path, varied, metadata)
    return path


@pytest.mark.parametrize("family_name", ["sd1", "sdxl"])
def test_convert_to_the_diffusers_layout_loads_in_diffusers_as_the_kohya_file_merges(
    lora_factory, tmp_path, capsys, family_name
):
    kohya = _varied_kohya_lora(lora_factory, family_name, tmp_path / "kohya.safetensors")
    as_diffusers, back = tmp_path / "diffusers.safetensors", tmp_path / "back.safetensors"
    assert main(["convert", str(kohya), "--layout", "diffusers", "--out", str(as_diffusers)]) == 0
    tensors = load_file(str(as_diffusers))
    assert not any(key.endswith(".alpha") for key in tensors)
    reports = {}
    for path in (kohya, as_diffusers):  # inspect reads every module's rank and alpha from either layout
        capsys.readouterr()
        assert main(["inspect", str(path), "--json"]) == 0
        reports[path] = json.loads(capsys.readouterr().out)
    assert reports[as_diffusers]["layout"] == "diffusers"
    assert reports[as_diffusers]["ranks"] == reports[kohya]["ranks"]
    assert reports[as_diffusers]["alphas"] == reports[kohya]["alphas"]
    assert len(set(reports[kohya]["alphas"].values())) == 4

    family = get_family(family_name)
    pipeline = build_pipeline(family, build_components(family, tiny_configs(family), seed=0))
    pipeline.load_lora_weights(str(as_diffusers))
    theirs_components = [pipeline.unet, *(getattr(pipeline, spec.component) for spec in family.text_encoders)]
    assert sum(hasattr(m, "lora_A") for c in theirs_components for m in c.modules()) == len(
        [key for key in tensors if key.endswith(".lora_A.weight")]
    )
    pipeline.fuse_lora()
    pipeline.unload_lora_weights()
    ours = build_components(family, tiny_configs(family), seed=0)
    kohya_tensors, _ = read_lora_file(kohya)
    merge_lora_into(family, ours.unet, ours.text_encoders, kohya_tensors)
    for theirs, mine in zip(theirs_components, [ours.unet, *ours.text_encoders]):
        expected = mine.state_dict()
        for key, tensor in theirs.state_dict().items():
            torch.testing.assert_close(tensor, expected[key], rtol=0, atol=1e-6, msg=key)

    # and back: the kohya file's tensors exactly, without the diffusers layout's metadata entry
    assert main(["convert", str(as_diffusers), "--layout", "kohya", "--out", str(back)]) == 0
    original, round_trip = load_file(str(kohya)), load_file(str(back))
    assert set(round_trip) == set(original)
    assert all(torch.equal(round_trip[key], original[key]) for key in original)
    with safe_open(str(back), framework="pt") as handle:
        assert "lora_adapter_metadata" not in handle.metadata()
