"""LoKr adapters and files: LyCORIS's layout and scale, checked against the lycoris-lora package's own computation."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F
from lycoris.functional.general import factorization as lycoris_factorization
from lycoris.functional.lokr import diff_weight
from lycoris.modules.lokr import LokrModule
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from library.networks import LoraFileError, LoraOptions, inject_lora, lora_metadata
from library.networks.lokr import factorization, lokr_layout, split_lokr
from library.networks.metadata import TrainingInfo

FACTORIZED = {"module": "lokr", "dim": 2, "alpha": 1.0, "conv_dim": 2, "conv_alpha": 3.0}
FULL_MATRIX = {"module": "lokr", "dim": 4, "alpha": 2.0, "conv_dim": 2, "lokr_factor": 8, "lokr_full_matrix": True}
LAYOUTS = {"factorized": FACTORIZED, "full-matrix": FULL_MATRIX}


def _lokr_network(tiny, seed: int = 0, **options):
    """A LoKr network on the tiny SD1 model whose factors are all random (the update is visible)."""
    family, components = tiny("sd1")
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(**options))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.trainable_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return family, components, network


def _info() -> TrainingInfo:
    return TrainingInfo(output_name="lokr", resolution=(64, 64), learning_rate=1e-4, training_started_at=time.time())


def _plain_copy(layer: nn.Module) -> nn.Module:
    """The base module a peft layer wraps, as its own module (what LyCORIS wraps)."""
    base = layer.get_base_layer()
    if isinstance(base, nn.Linear):
        plain = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    else:
        plain = nn.Conv2d(base.in_channels, base.out_channels, base.kernel_size, base.stride, base.padding)
    plain.load_state_dict(base.state_dict())
    return plain


def test_factorization_matches_lycoris():
    for factor in (-1, 1, 2, 3, 4, 8, 16):
        for dimension in range(1, 400):
            assert factorization(dimension, factor) == lycoris_factorization(dimension, factor), (dimension, factor)


@pytest.mark.parametrize("full_matrix", [False, True])
def test_layout_is_the_one_lycoris_builds(full_matrix):
    """The factor shapes (and which factor is kept whole) are those of LyCORIS's own LokrModule."""
    modules = [nn.Linear(32, 32), nn.Linear(256, 64), nn.Linear(768, 320), nn.Conv2d(64, 128, 3), nn.Conv2d(32, 32, 1)]
    for module in modules:
        for rank in (1, 2, 4, 16):
            for factor in (-1, 4, 8):
                theirs = LokrModule("m", module, lora_dim=rank, alpha=1, factor=factor, full_matrix=full_matrix)
                expected = {
                    key.removeprefix("lokr_"): tuple(tensor.shape)
                    for key, tensor in theirs.custom_state_dict().items()
                    if key != "alpha"
                }
                layout = lokr_layout(tuple(module.weight.shape), rank, factor, full_matrix)
                assert layout.shapes() == expected, (module, rank, factor)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_saved_file_is_lycoris_layout_and_its_update_is_lycoris(tiny, tmp_path, layout):
    """Our file's update per module, by our reader, equals LyCORIS's functional weight computation and what the
    LokrModule LyCORIS builds from the file's tensors applies in its forward pass, for Linear and 1x1/3x3 convs."""
    options = LAYOUTS[layout]
    family, _, network = _lokr_network(tiny, **options)
    path = tmp_path / "lokr.safetensors"
    network.save(path, "float", lora_metadata(family, LoraOptions(**options), _info()))
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_network_module"] == "lycoris.kohya"
    args = json.loads(metadata["ss_network_args"])
    assert (args["algo"], args["factor"], args["conv_dim"]) == ("lokr", str(options.get("lokr_factor", -1)), "2")
    assert args.get("full_matrix") == ("True" if options.get("lokr_full_matrix") else None)

    rest, modules = split_lokr(tensors, str(path))
    assert not rest and modules.keys() == network.modules.keys()
    kernels = {tuple(network.modules[name].get_base_layer().weight.shape[2:]) for name in modules}
    assert {(), (1, 1), (3, 3)} <= kernels  # Linear, 1x1 and 3x3 conv modules are all checked
    generator = torch.Generator().manual_seed(1)
    for name, weights in modules.items():
        keys = {key.removeprefix(name) for key in tensors if key.startswith(name + ".")}
        whole = options.get("lokr_full_matrix", False)
        factors = {".lokr_w2"} if whole else {".lokr_w2_a", ".lokr_w2_b"}
        assert keys == {".lokr_w1", ".alpha", *factors}
        plain = _plain_copy(network.modules[name])
        ours = weights.delta(plain.weight.shape) * weights.scale
        part = {key: tensors.get(f"{name}.lokr_{key}") for key in ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b")}
        alpha = tensors[f"{name}.alpha"]
        functional = diff_weight(*part.values(), None, gamma=alpha, backend="torch")
        torch.testing.assert_close(ours, functional.reshape(plain.weight.shape), rtol=1e-6, atol=1e-7)
        with torch.no_grad():
            lycoris = LokrModule.make_module_from_state_dict(name, plain, *part.values(), None, None, alpha, None)
            x = torch.randn(2, plain.weight.shape[1], *([8, 8] if plain.weight.ndim == 4 else []), generator=generator)
            if plain.weight.ndim == 4:
                expected = plain(x) + F.conv2d(x, ours, stride=plain.stride, padding=plain.padding)
            else:
                expected = plain(x) + F.linear(x, ours)
            torch.testing.assert_close(lycoris(x), expected, rtol=1e-5, atol=1e-6)
        # peft's live layer applies the same update
        torch.testing.assert_close(network.modules[name].get_delta_weight("default"), ours, rtol=1e-6, atol=1e-7)
        if whole:
            assert weights.rank is None and weights.scale == 1.0 and float(alpha) == network.targets[name].rank


def test_lycoris_tucker_and_decomposed_modules_read_as_lycoris_computes():
    """Files LyCORIS writes in its other layouts (w1 factorized too, Tucker-form conv w2) give LyCORIS's update."""
    generator = torch.Generator().manual_seed(2)
    for module in (nn.Conv2d(64, 128, 3), nn.Linear(256, 128)):
        lycoris = LokrModule("m", module, lora_dim=2, alpha=3.0, decompose_both=True, use_tucker=True, factor=16)
        with torch.no_grad():
            for parameter in lycoris.parameters():
                if parameter is not module.weight and parameter is not module.bias:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator))
        tensors = {f"m.{key}": tensor.detach() for key, tensor in lycoris.custom_state_dict().items()}
        assert "m.lokr_w1_a" in tensors and ("m.lokr_t2" in tensors) == (module.weight.ndim == 4)
        _, modules = split_lokr(tensors, "lycoris")
        weights = modules["m"]
        assert weights.rank == 2 and weights.scale == 1.5
        expected = lycoris.get_weight(module.weight.shape)  # what LyCORIS's forward adds
        torch.testing.assert_close(weights.delta(module.weight.shape) * weights.scale, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fresh_adapters_leave_the_model_unchanged_and_train_every_factor(tiny, layout):
    """LyCORIS's initialisation: w1 (and w2_a) random, the last w2 factor zero, so training starts from the base."""
    family, components = tiny("sd1")
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(**LAYOUTS[layout]))
    parameters = {id(p) for p in network.trainable_parameters()}
    for name, layer in network.modules.items():
        assert not layer.get_delta_weight("default").any(), name
        factors = {key: p for key, p in layer.named_parameters() if not key.startswith("base_layer.")}
        assert factors and all(id(p) in parameters for p in factors.values())
        assert factors["lokr_w1.default"].any()


def test_continue_from_a_lokr_file(tiny, tmp_path):
    family, _, trained = _lokr_network(tiny, seed=3, **FACTORIZED)
    path = tmp_path / "lokr.safetensors"
    trained.save(path, "float", lora_metadata(family, trained.options, _info()))
    _, fresh_components, fresh = _lokr_network(tiny, seed=4, **FACTORIZED)
    fresh.set_multiplier(0.5)
    fresh.load_file(path)
    for key, tensor in trained.state_dict_kohya().items():
        assert torch.equal(fresh.state_dict_kohya()[key], tensor), key
    for name, layer in fresh.modules.items():  # the multiplier set before loading still applies
        expected = trained.modules[name].get_delta_weight("default") * 0.5
        torch.testing.assert_close(layer.get_delta_weight("default"), expected)


def test_files_of_another_type_or_layout_are_refused_in_one_line(tiny, tmp_path):
    family, _, lokr = _lokr_network(tiny, **FACTORIZED)
    path = tmp_path / "lokr.safetensors"
    lokr.save(path, "float", lora_metadata(family, lokr.options, _info()))
    _, _, lora = _lokr_network(tiny, module="lora", dim=2, conv_dim=2)
    with pytest.raises(LoraFileError, match=r"lokr.safetensors: key '.*' is LoKr; set network.module = 'lokr'"):
        lora.load_file(path)
    with pytest.raises(LoraFileError, match=r"key '.*\.lora_down\.weight' is not part of a LoKr module"):
        lokr.load_kohya(lora.state_dict_kohya(), source="lora.safetensors")
    _, _, other_factor = _lokr_network(tiny, **{**FACTORIZED, "lokr_factor": 2})
    with pytest.raises(LoraFileError) as caught:
        other_factor.load_file(path)
    message = str(caught.value)
    name = message.split(": ")[1].split(" ")[0]
    ours, theirs = (network.state_dict_kohya()[f"{name}.lokr_w1"].shape for network in (lokr, other_factor))
    assert f"{name} holds lokr_w1 {tuple(ours)}" in message and f"this network needs lokr_w1 {tuple(theirs)}" in message
    assert ours != theirs
    assert message.endswith("set network dim/conv_dim, lokr_factor and lokr_full_matrix as the file was trained")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"module": "lokr", "use_dora": True}, "use_dora cannot be combined with the LoKr module"),
        ({"module": "lokr", "dropout": 0.1}, "dropout is not applied by LoKr adapters"),
        ({"lokr_factor": 4}, "lokr_factor and lokr_full_matrix need the LoKr module"),
        ({"module": "lokr", "lokr_factor": 0}, "lokr_factor must be -1 (automatic) or >= 1, got 0"),
        ({"module": "loha"}, "network module must be one of lora, lokr, got 'loha'"),
    ],
)
def test_option_combinations_tools_build_are_checked(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LoraOptions(**options)


def test_incomplete_lokr_module_names_the_key():
    tensors = {"lora_unet_x.lokr_w1": torch.ones(2, 2), "lora_unet_x.lokr_w2_a": torch.ones(4, 1)}
    with pytest.raises(LoraFileError, match="LoKr module 'lora_unet_x' has neither lora_unet_x.lokr_w2 nor "
                                            "lora_unet_x.lokr_w2_b; the file is incomplete"):
        split_lokr(tensors, "f.safetensors")
    tensors["lora_unet_x.lokr_w2_b"] = torch.ones(2, 3)
    with pytest.raises(LoraFileError, match="shapes do not fit together"):
        split_lokr(tensors, "f.safetensors")
