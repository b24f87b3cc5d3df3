"""Loading in the storage dtype without a full-precision copy: the streamed reader and the loader built on it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from library.models.errors import ModelLoadError
from library.models.loader import load_base_model
from library.models.tensor_stream import StreamedTensors

REPO = Path(__file__).resolve().parents[2]


def _modules(model) -> dict[str, torch.nn.Module]:
    parts = {"unet": model.unet, "vae": model.vae}
    parts.update({spec.component: encoder for spec, encoder in zip(model.family.text_encoders, model.text_encoders)})
    return parts


def test_streamed_tensors_read_every_dtype_and_cast_only_floats(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5), "f16": torch.randn(7).half(), "bf16": torch.randn(2, 2).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3), "flag": torch.tensor([True, False]), "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, path, metadata={"note": "kept"})
    with StreamedTensors(path) as plain:
        assert plain.metadata == {"note": "kept"}
        shapes = {key: tuple(tensor.shape) for key, tensor in plain.shapes.items()}
        assert shapes == {key: tuple(tensor.shape) for key, tensor in tensors.items()}
        for key, tensor in load_file(path).items():
            assert plain[key].dtype == tensor.dtype and torch.equal(plain[key], tensor), key
    with StreamedTensors(path, lambda key: torch.bfloat16) as cast:
        assert cast["f32"].dtype == torch.bfloat16 and torch.equal(cast["f32"], tensors["f32"].bfloat16())
        assert cast["i64"].dtype == torch.int64 and cast["flag"].dtype == torch.bool


def test_truncated_file_is_refused_on_open(tmp_path):
    path = tmp_path / "whole.safetensors"
    save_file({"weight": torch.randn(64, 64)}, path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="cut.safetensors: truncated"):
        StreamedTensors(cut)


def test_casting_read_holds_one_full_precision_tensor_at_a_time(tmp_path):
    """Reading a 192 MiB fp32 file as bf16 peaks near the 96 MiB result (+ one 16 MiB tensor), far below the
    fp32 copy + bf16 copy (288 MiB) a whole-file read followed by a cast holds."""
    path = tmp_path / "big.safetensors"
    save_file({f"w{i}": torch.full((1024, 4096), float(i)) for i in range(12)}, path)
    code = (  # the kernel's peak-RSS mark is reset after the imports (clear_refs 5), then read back
        "import sys, torch\n"
        "from library.models.tensor_stream import StreamedTensors\n"
        "def status(key):\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key + ':'))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS')\n"
        "with StreamedTensors(sys.argv[1], lambda key: torch.bfloat16) as tensors:\n"
        "    kept = {key: tensors[key] for key in tensors}\n"
        "assert all(t.dtype == torch.bfloat16 for t in kept.values())\n"
        "print((status('VmHWM') - before) / 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO,
                            timeout=300, check=True)
    growth_mib = float(result.stdout.strip())
    assert 90 < growth_mib < 150, growth_mib


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_bf16_load_matches_a_cast_fp32_load_for_both_layouts(tiny_model_factory, family):
    tiny = tiny_model_factory(family)
    reference = _modules(load_base_model(tiny.folder))
    for source in (tiny.folder, tiny.single_file):
        loaded = _modules(load_base_model(source, dtype=torch.bfloat16, vae_dtype=torch.float32))
        for name, module in loaded.items():
            expected_dtype = torch.float32 if name == "vae" else torch.bfloat16
            expected = reference[name].state_dict()
            for key, tensor in module.state_dict().items():
                want = expected[key].to(expected_dtype) if expected[key].is_floating_point() else expected[key]
                assert tensor.dtype == want.dtype and torch.equal(tensor, want), f"{source.name}: {name}.{key}"


def test_folder_load_matches_diffusers_and_transformers(tiny_model_factory):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = tiny_model_factory("sd1").folder
    ours = _modules(load_base_model(folder))
    theirs = {
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
    }
    for name, module in theirs.items():
        mine = ours[name].state_dict()
        assert mine.keys() == module.state_dict().keys(), name
        assert all(torch.equal(mine[key], value) for key, value in module.state_dict().items()), name
        if name != "text_encoder":  # diffusers configs: the same architecture settings
            settings = [
                json.dumps({k: v for k, v in dict(m.config).items() if not k.startswith("_")}, sort_keys=True)
                for m in (ours[name], module)
            ]
            assert settings[0] == settings[1], name


def test_folder_component_in_another_weight_format_still_loads(tiny_model_factory, tmp_path):
    """A component saved as ``.bin`` (older diffusers folders) goes through ``from_pretrained``."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_factory("sd1").folder, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), folder / "vae" / "diffusion_pytorch_model.bin")
    weights.unlink()
    expected = load_base_model(tiny_model_factory("sd1").folder).vae.state_dict()
    loaded = load_base_model(folder, dtype=torch.bfloat16, vae_dtype=torch.float32).vae.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in expected.items())
