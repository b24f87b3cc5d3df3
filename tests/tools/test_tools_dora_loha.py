"""DoRA and LyCORIS LoHa files in the tools: merged exactly where the math is defined, refused in one line elsewhere."""

from __future__ import annotations

import json

import pytest
import torch
from lycoris.functional.loha import diff_weight
from safetensors.torch import load_file, save_file
from tool_helpers import model_outputs, relative_error

from library.models.families import SD1
from library.models.loader import load_base_model
from library.networks import LoraOptions, inject_lora, read_lora_file
from library.networks.targets import find_targets
from library.tools.__main__ import main


def test_dora_merge_into_equals_the_live_peft_layers(tiny_sd1, lora_factory, tmp_path):
    lora = lora_factory("sd1", "dora", seed=5, use_dora=True, conv_dim=2)
    assert any(key.endswith(".dora_scale") for key in load_file(str(lora)))
    out = tmp_path / "merged.safetensors"
    args = ["merge-into", tiny_sd1.single_file, lora, "--ratios", "0.7", "--save-precision", "float", "--out", out]
    assert main([str(arg) for arg in args]) == 0

    merged, live = load_base_model(out), load_base_model(tiny_sd1.single_file)
    options = LoraOptions(dim=4, alpha=2.0, use_dora=True, conv_dim=2)  # as lora_factory built the file
    network = inject_lora(live.family, live.unet, live.text_encoders, options)
    network.load_kohya(read_lora_file(lora)[0])
    network.set_multiplier(0.7)
    for merged_out, live_out in zip(model_outputs(merged), model_outputs(live)):
        assert relative_error(merged_out, live_out) < 1e-4
    # the magnitude normalisation is what makes them agree: peft's own merge gives the same weights
    for kohya_name, layer in network.modules.items():
        target = network.targets[kohya_name]
        root = merged.unet if target.is_unet else merged.text_encoders[target.component]
        layer.merge(adapter_names=["default"])
        torch.testing.assert_close(root.get_submodule(target.path).weight, layer.get_base_layer().weight,
                                   rtol=1e-4, atol=1e-5)


def test_dora_resize_keeps_magnitudes_and_merge_loras_refuses(lora_factory, tmp_path, capsys):
    lora = lora_factory("sd1", "dora", seed=5, use_dora=True)
    out = tmp_path / "resized.safetensors"
    assert main(["resize", str(lora), "--rank", "4", "--save-precision", "float", "--out", str(out)]) == 0
    before, after = load_file(str(lora)), load_file(str(out))
    scales = [key for key in before if key.endswith(".dora_scale")]
    assert scales and all(torch.equal(after[key], before[key]) for key in scales)
    assert after.keys() == before.keys()

    other = lora_factory("sd1", "plain", seed=6)
    assert main(["merge-loras", str(other), str(lora), "--out", str(tmp_path / "m.safetensors")]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"error: {lora}: module lora_") and "is DoRA (dora_scale)" in message
    assert message.endswith("merge the LoRAs into a model with merge-into instead")
    assert not (tmp_path / "m.safetensors").exists()


def _loha_file(tiny_sd1, path, rank=2, alpha=1.0):
    """A LoHa file for the tiny SD1 model's attention Linears and one 3x3 conv (Tucker form), random factors."""
    model = load_base_model(tiny_sd1.single_file)
    generator = torch.Generator().manual_seed(11)
    tensors = {}
    targets = [t for t in find_targets(SD1, model.unet, model.text_encoders, LoraOptions(conv_dim=2)) if t.is_unet]
    linear = [t for t in targets if isinstance(model.unet.get_submodule(t.path), torch.nn.Linear)][:6]
    conv = [t for t in targets if getattr(model.unet.get_submodule(t.path), "kernel_size", (1, 1)) == (3, 3)][:1]
    for target in linear + conv:
        weight = model.unet.get_submodule(target.path).weight
        out_dim, in_dim, *kernel = weight.shape

        def rand(*shape):
            return torch.randn(*shape, generator=generator) * 0.3

        if kernel:
            tensors.update({".hada_t1": rand(rank, rank, *kernel), ".hada_t2": rand(rank, rank, *kernel),
                            ".hada_w1_a": rand(rank, out_dim), ".hada_w2_a": rand(rank, out_dim),
                            ".hada_w1_b": rand(rank, in_dim), ".hada_w2_b": rand(rank, in_dim)})
        else:
            tensors.update({".hada_w1_a": rand(out_dim, rank), ".hada_w2_a": rand(out_dim, rank),
                            ".hada_w1_b": rand(rank, in_dim), ".hada_w2_b": rand(rank, in_dim)})
        tensors[".alpha"] = torch.tensor(alpha)
        tensors = {(target.name + key if key.startswith(".") else key): value for key, value in tensors.items()}
    save_file(tensors, str(path), metadata={"ss_network_module": "lycoris.kohya"})
    return path, model, linear + conv


def test_loha_merge_into_matches_lycoris_and_other_tools_refuse(tiny_sd1, tmp_path, capsys):
    loha, base, targets = _loha_file(tiny_sd1, tmp_path / "loha.safetensors")
    tensors = load_file(str(loha))
    out = tmp_path / "merged.safetensors"
    assert main(["merge-into", str(tiny_sd1.single_file), str(loha), "--ratios", "0.5",
                 "--save-precision", "float", "--out", str(out)]) == 0
    merged = load_base_model(out)
    for target in targets:
        name = target.name
        parts = [tensors[f"{name}.hada_{part}"] for part in ("w1_b", "w1_a", "w2_b", "w2_a")]
        tucker = [tensors.get(f"{name}.hada_t1"), tensors.get(f"{name}.hada_t2")]
        expected_delta = diff_weight(*parts, *tucker, gamma=1.0 / 2, backend="torch")  # alpha / rank
        original = base.unet.get_submodule(target.path).weight
        expected = original + expected_delta.reshape(original.shape) * 0.5
        actual = merged.unet.get_submodule(target.path).weight
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(actual, original)
    assert f"{targets[-1].name}.hada_t1" in tensors  # the Tucker conv form was merged too

    capsys.readouterr()
    assert main(["inspect", str(loha), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["kind"], report["family"], report["module_count"]) == ("LoHa", "sd1", len(targets))
    assert set(report["rank_histogram"]) == {"2"}

    assert main(["resize", str(loha), "--rank", "1", "--out", str(tmp_path / "r.safetensors")]) == 2
    assert main(["merge-loras", str(loha), "--out", str(tmp_path / "m.safetensors")]) == 2
    resize_error, merge_error = capsys.readouterr().err.strip().splitlines()[-2:]
    names = {target.name for target in targets}
    for line, action in ((resize_error, "resize"), (merge_error, "combine")):
        assert line.startswith(f"error: {loha}: module lora_unet_") and line.split()[3] in names
        assert line.endswith(f"is LoHa (hada_* keys), which has no LoRA factors to {action}; "
                             "merge it into a model with merge-into instead")
    assert not (tmp_path / "r.safetensors").exists() and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("drop", [".hada_w2_b", ".hada_t2"])
def test_incomplete_loha_module_is_a_one_line_error(tiny_sd1, tmp_path, capsys, drop):
    loha, _, targets = _loha_file(tiny_sd1, tmp_path / "loha.safetensors")
    tensors = load_file(str(loha))
    victim = targets[-1].name  # the Tucker conv module has both t1 and t2
    del tensors[victim + drop]
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    assert main(["merge-into", str(tiny_sd1.single_file), str(broken), "--out", str(tmp_path / "x.safetensors")]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert message.startswith(f"error: {broken}: LoHa module {victim!r}")
