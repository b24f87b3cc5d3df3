"""Loading in the storage dtype without a full-precision copy: the streamed reader and the loader built on it."""

from __future__ import annotations

import json
import os
import shutil
import struct
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
    for map_uncast in (False, True):
        _check_plain_and_cast_reads(path, tensors, map_uncast)


def _check_plain_and_cast_reads(path: Path, tensors: dict[str, torch.Tensor], map_uncast: bool) -> None:
    with StreamedTensors(path, map_uncast=map_uncast) as plain:
        assert plain.metadata == {"note": "kept"}
        shapes = {key: tuple(tensor.shape) for key, tensor in plain.shapes.items()}
        assert shapes == {key: tuple(tensor.shape) for key, tensor in tensors.items()}
        for key, tensor in load_file(path).items():
            assert plain[key].dtype == tensor.dtype and torch.equal(plain[key], tensor), key
    with StreamedTensors(path, lambda key: torch.bfloat16, map_uncast) as cast:
        assert cast["f32"].dtype == torch.bfloat16 and torch.equal(cast["f32"], tensors["f32"].bfloat16())
        assert cast["i64"].dtype == torch.int64 and cast["flag"].dtype == torch.bool


def _file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of ``path``."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path.resolve()):
            ranges.append(tuple(int(value, 16) for value in fields[0].split("-")))
    return ranges


def _holding_range(tensor: torch.Tensor, ranges: list[tuple[int, int]]) -> tuple[int, int] | None:
    return next((r for r in ranges if r[0] <= tensor.data_ptr() < r[1]), None)


def _file_mapping(tensor: torch.Tensor, path: Path) -> tuple[int, int] | None:
    """The range of this process's mapping of ``path`` that holds ``tensor``'s data, if any."""
    return _holding_range(tensor, _file_mappings(path))


def test_uncast_tensors_are_read_unless_mapping_is_asked_for(tmp_path):
    path = tmp_path / "one.safetensors"
    save_file({"a": torch.randn(8, 8)}, path)
    with StreamedTensors(path) as tensors:
        read = tensors["a"]
    with StreamedTensors(path, map_uncast=True) as tensors:
        mapped = tensors["a"]
    assert torch.equal(read, mapped)
    assert _file_mapping(read, path) is None and _file_mapping(mapped, path) is not None


def test_uncast_tensors_are_views_of_one_private_mapping_of_the_file(tmp_path):
    """Kept-as-stored tensors are mapped, not copied: views of one mapping of the file (one, not one per tensor), valid
    after the reader closes, copy-on-write, and unmapped once the last of them is released."""
    path = tmp_path / "three.safetensors"
    expected = {"a": torch.randn(8, 8), "b": torch.randn(4), "c": torch.randn(3, 3)}
    save_file(expected, path)
    on_disk = path.read_bytes()
    with StreamedTensors(path, map_uncast=True) as tensors:
        a, b, c = tensors["a"], tensors["b"], tensors["c"]
    assert all(torch.equal(t, expected[k]) for k, t in zip("abc", (a, b, c)))
    mappings = {_file_mapping(tensor, path) for tensor in (a, b, c)}
    assert len(mappings) == 1 and None not in mappings and len(_file_mappings(path)) == 1, mappings
    a.add_(1.0)
    assert torch.equal(a, expected["a"] + 1) and path.read_bytes() == on_disk
    del a, b
    assert _file_mappings(path)
    del c
    assert not _file_mappings(path)


def test_tensors_are_read_when_the_system_refuses_the_mapping(tmp_path, monkeypatch):
    """A cap on address space (``ulimit -v``) or strict overcommit makes mapping fail: the tensors are read."""
    path = tmp_path / "two.safetensors"
    save_file({"a": torch.randn(8, 8), "b": torch.arange(5)}, path)

    def refuse(*args, **kwargs):
        raise RuntimeError("unable to mmap: Cannot allocate memory")

    monkeypatch.setattr(torch, "from_file", refuse)
    with StreamedTensors(path, map_uncast=True) as tensors:
        loaded = {key: tensors[key] for key in tensors}
    assert all(torch.equal(loaded[key], value) for key, value in load_file(path).items())
    assert not any(_file_mapping(tensor, path) for tensor in loaded.values())


def test_misaligned_tensor_is_copied_not_misread(tmp_path):
    """An fp32 tensor whose bytes start at an offset that is not a multiple of 4 (legal in the format)."""
    values = torch.arange(6, dtype=torch.float32)
    header = {"odd": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "f32": {"dtype": "F32", "shape": [2, 3], "data_offsets": [3, 27]}}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes([7, 8, 9]) + values.numpy().tobytes())
    with StreamedTensors(path, map_uncast=True) as tensors:
        assert torch.equal(tensors["odd"], torch.tensor([7, 8, 9], dtype=torch.uint8))
        assert torch.equal(tensors["f32"], values.reshape(2, 3))


def test_truncated_file_is_refused_on_open(tmp_path):
    path = tmp_path / "whole.safetensors"
    save_file({"weight": torch.randn(64, 64)}, path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="cut.safetensors: truncated"):
        StreamedTensors(cut)


@pytest.mark.slow
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


def test_fp32_load_with_map_weights_maps_instead_of_copying(tiny_model_factory):
    """Kept in its stored dtype, every weight lies in a mapping of its file, without an open file per weight;
    releasing a component of a diffusers folder (the VAE after latent caching) unmaps its file."""
    tiny = tiny_model_factory("sd1")
    for source in (tiny.single_file, tiny.folder):
        open_files = len(os.listdir("/proc/self/fd"))
        model = load_base_model(source, map_weights=True)
        assert len(os.listdir("/proc/self/fd")) <= open_files + 2  # mappings hold no descriptor
        for name, module in _modules(model).items():
            weights = source if source.is_file() else next((source / name).glob("*.safetensors"))
            ranges = _file_mappings(weights)
            assert all(_holding_range(p, ranges) for p in module.parameters()), (source.name, name)
    vae_file = next((tiny.folder / "vae").glob("*.safetensors"))
    model.vae = None
    assert not _file_mappings(vae_file)
    assert _file_mappings(next((tiny.folder / "unet").glob("*.safetensors")))


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


def test_only_a_lora_run_maps_its_base(tiny_model_factory, tmp_path):
    """A LoRA run's base stays frozen and unsaved, so its fp32 weights are mapped; full fine-tuning trains and saves
    the base as a model (safetensors refuses tensors whose storage is wider than they are), so it reads, and so does a
    channels-last run (the re-laid-out convs would leave their mapped originals resident)."""
    from library.config import loads_config
    from library.training.accelerator import Precision
    from library.training.full_weights import FullWeights
    from library.training.lora_weights import LoraWeights
    from library.training.memory_options import load_training_model

    tiny = tiny_model_factory("sd1")
    text = (f'[model]\npretrained_model_name_or_path = "{tiny.single_file.as_posix()}"\n'
            f'[dataset]\ntrain_data_dir = "{tmp_path.as_posix()}"\n')
    config, channels_last = loads_config(text), loads_config(text + "[training]\nchannels_last = true\n")
    precision = Precision(autocast="no", frozen=torch.float32)
    for run_config, factory, mapped in ((config, LoraWeights, True), (config, FullWeights, False),
                                        (channels_last, LoraWeights, False)):
        unet = load_training_model(run_config, factory, precision).unet
        ranges = _file_mappings(tiny.single_file)
        assert all(bool(_holding_range(p, ranges)) is mapped for p in unet.parameters()), factory.__name__
