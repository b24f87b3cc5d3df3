"""A1111 hypernetworks: the MLPs and the saved dicts have A1111's keys and shapes, the .pt loads with
weights_only=True, the .safetensors holds the same tensors, and the hooks change the UNet exactly where A1111's
cross-attention would (and change nothing when the MLPs add zero)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from test_network import _unet_output

from library.networks.hypernetwork import (
    Hypernetwork,
    HypernetworkOptions,
    attach,
    context_widths,
    default_dropout_structure,
    detach,
)
from library.networks.hypernetwork_file import (
    HypernetworkFileError,
    a1111_dict,
    load_hypernetwork,
    read_hypernetwork,
    write_pt,
    write_safetensors,
)

A1111_ENTRIES = {
    "step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization", "use_dropout",
    "dropout_structure", "last_layer_dropout", "activate_output", "sd_checkpoint", "sd_checkpoint_name",
    "optional_info",
}
INFO = {"step": 7, "name": "hn", "sd_checkpoint": "0123456789", "sd_checkpoint_name": "base", "optional_info": None}


def _options(structure, activation="linear", layer_norm=False, use_dropout=False, last_layer_dropout=False,
             activate_output=False, weight_init="Normal") -> HypernetworkOptions:
    dropout = default_dropout_structure(structure, use_dropout, last_layer_dropout)
    return HypernetworkOptions(tuple(structure), activation, weight_init, layer_norm, use_dropout, tuple(dropout),
                               activate_output, last_layer_dropout)


CASES = {
    "1-2-1 linear": _options([1, 2, 1]),
    "1-2-2-1 relu, norm, dropout": _options([1, 2, 2, 1], "relu", layer_norm=True, use_dropout=True),
    "1-2-2-1 swish, last-layer dropout, activated output": _options(
        [1, 2, 2, 1], "swish", use_dropout=True, last_layer_dropout=True, activate_output=True,
        weight_init="KaimingNormal"),
    "1-1.5-1 leakyrelu, xavier": _options([1, 1.5, 1], "leakyrelu", layer_norm=True, weight_init="XavierUniform"),
}


def a1111_shapes(width: int, options: HypernetworkOptions) -> dict[str, tuple[int, ...]]:
    """The state dict A1111's HypernetworkModule has, from its construction rules: per step a Linear, then the
    activation (not after the last Linear unless activate_output; none for linear), a LayerNorm if asked, a Dropout
    where the dropout structure says; each module takes one index of ``linear``."""
    structure, shapes, index = options.layer_structure, {}, 0
    for i in range(len(structure) - 1):
        fan_in, fan_out = int(width * structure[i]), int(width * structure[i + 1])
        shapes |= {f"linear.{index}.weight": (fan_out, fan_in), f"linear.{index}.bias": (fan_out,)}
        index += 1
        if options.activation_func != "linear" and (i < len(structure) - 2 or options.activate_output):
            index += 1
        if options.add_layer_norm:
            shapes |= {f"linear.{index}.weight": (fan_out,), f"linear.{index}.bias": (fan_out,)}
            index += 1
        if options.dropout_structure[i + 1] > 0:
            index += 1
    return shapes


def test_dropout_structure_follows_a1111s_rule():
    assert default_dropout_structure([1, 2, 1], False, True) == [0, 0, 0]
    assert default_dropout_structure([1, 2, 2, 1], True, False) == [0, 0.3, 0, 0]
    assert default_dropout_structure([1, 2, 2, 1], True, True) == [0, 0.3, 0.3, 0]
    assert default_dropout_structure([1, 2, 4, 2, 1], True, False) == [0, 0.3, 0.3, 0, 0]


@pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
def test_pt_file_loads_with_weights_only_and_has_a1111s_keys_and_shapes(options, tmp_path):
    hypernetwork = Hypernetwork([64, 96], options)
    path = tmp_path / "hn.pt"
    write_pt(path, a1111_dict(hypernetwork, INFO, torch.float32))

    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {64, 96} | A1111_ENTRIES
    for width in (64, 96):
        key_mlp, value_mlp = loaded[width]
        for state_dict in (key_mlp, value_mlp):
            assert {name: tuple(tensor.shape) for name, tensor in state_dict.items()} == a1111_shapes(width, options)
    assert loaded["layer_structure"] == list(options.layer_structure)
    assert loaded["dropout_structure"] == list(options.dropout_structure)
    assert loaded["last_layer_dropout"] == (options.dropout_structure[-2] > 0)
    assert (loaded["activation_func"], loaded["weight_initialization"]) == (options.activation_func,
                                                                            options.weight_init)
    assert (loaded["is_layer_norm"], loaded["activate_output"]) == (options.add_layer_norm, options.activate_output)
    assert {key: loaded[key] for key in INFO} == INFO


def test_normal_init_is_a1111s_and_key_and_value_mlps_differ():
    hypernetwork = Hypernetwork([256], _options([1, 2, 1], layer_norm=True))
    key_mlp, value_mlp = hypernetwork.pairs["256"]
    weights = [p.detach() for name, p in key_mlp.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in key_mlp.named_parameters() if name.endswith("bias")]
    assert all(abs(float(w.std()) - 0.01) < 0.002 and abs(float(w.mean())) < 0.002 for w in weights)
    assert all(not b.any() for b in biases)
    assert not torch.equal(key_mlp.linear[0].weight, value_mlp.linear[0].weight)


def test_safetensors_holds_the_pt_tensors_under_flat_keys(tmp_path):
    options = CASES["1-2-2-1 relu, norm, dropout"]
    saved = a1111_dict(Hypernetwork([64], options), INFO, torch.float16)
    write_pt(tmp_path / "hn.pt", saved)
    write_safetensors(tmp_path / "hn.safetensors", saved, {"ss_steps": "7"})
    pt = torch.load(tmp_path / "hn.pt", weights_only=True)
    with safe_open(str(tmp_path / "hn.safetensors"), framework="pt") as handle:
        flat = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    expected = {f"64.{role}.{name}": tensor for role, state in zip("kv", pt[64]) for name, tensor in state.items()}
    assert flat.keys() == expected.keys()
    assert all(torch.equal(flat[key], expected[key]) and flat[key].dtype == torch.float16 for key in expected)
    assert json.loads(metadata["hypernetwork.layer_structure"]) == [1.0, 2.0, 2.0, 1.0]
    assert json.loads(metadata["hypernetwork.sd_checkpoint"]) == "0123456789" and metadata["ss_steps"] == "7"
    for path in (tmp_path / "hn.pt", tmp_path / "hn.safetensors"):
        read = read_hypernetwork(path)
        assert read.options == options and read.info["step"] == 7


@pytest.fixture
def sd1(tiny):
    family, components = tiny("sd1")
    return components


def _trained_like(hypernetwork: Hypernetwork, seed: int = 1) -> Hypernetwork:
    """Weights as large as a trained hypernetwork's, so the effect is far above float noise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in hypernetwork.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return hypernetwork.eval()


def test_hooks_change_the_unet_output_and_detach_restores_it(sd1):
    base = _unet_output(sd1)
    width = sd1.unet.config.cross_attention_dim
    hypernetwork = _trained_like(Hypernetwork([width], _options([1, 2, 1], "relu")))
    handles = attach(sd1.unet, hypernetwork)
    assert not torch.allclose(_unet_output(sd1), base, atol=1e-4)
    hypernetwork.set_strength(0.0)
    assert torch.equal(_unet_output(sd1), base)
    detach(sd1.unet, handles)
    assert torch.equal(_unet_output(sd1), base) and not hasattr(sd1.unet, "furnace_hypernetwork")


def test_mlps_that_add_zero_change_nothing(sd1):
    base = _unet_output(sd1)
    hypernetwork = Hypernetwork([sd1.unet.config.cross_attention_dim], _options([1, 2, 1], "tanh"))
    with torch.no_grad():
        for param in hypernetwork.parameters():
            param.zero_()
    attach(sd1.unet, hypernetwork)
    assert torch.equal(_unet_output(sd1), base)


def test_key_and_value_inputs_get_their_own_mlp(sd1):
    """In a cross-attention layer to_k sees the key MLP's output and to_v the value MLP's: with the value MLP
    adding zero, to_v receives the context unchanged while to_k's input differs."""
    width = sd1.unet.config.cross_attention_dim
    hypernetwork = _trained_like(Hypernetwork([width], _options([1, 2, 1])))
    with torch.no_grad():
        for param in hypernetwork.pairs[str(width)][1].parameters():
            param.zero_()
    attach(sd1.unet, hypernetwork)
    attention = sd1.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    seen = {}

    def record(role):
        def hook(module, args):
            seen.setdefault(role, args[0])
        return hook

    attention.to_k.register_forward_pre_hook(record("k"), prepend=False)
    attention.to_v.register_forward_pre_hook(record("v"), prepend=False)
    generator = torch.Generator().manual_seed(0)
    context = torch.randn(1, 77, width, generator=generator)
    sd1.unet(torch.randn(1, 4, 8, 8, generator=generator), torch.tensor([500]), encoder_hidden_states=context)
    assert torch.equal(seen["v"], context)
    key_mlp = hypernetwork.pairs[str(width)][0]
    assert torch.allclose(seen["k"], context + key_mlp.linear(context), atol=1e-6)
    assert not torch.allclose(seen["k"], context, atol=1e-3)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_saved_file_applies_exactly_as_the_live_hypernetwork(sd1, tmp_path, suffix):
    width = sd1.unet.config.cross_attention_dim
    live = _trained_like(Hypernetwork([width], CASES["1-2-2-1 relu, norm, dropout"]))
    saved = a1111_dict(live, INFO, torch.float32)
    path = tmp_path / f"hn{suffix}"
    write_pt(path, saved) if suffix == ".pt" else write_safetensors(path, saved, {})
    handles = attach(sd1.unet, live)
    expected = _unet_output(sd1)
    detach(sd1.unet, handles)
    attach(sd1.unet, load_hypernetwork(path))
    assert torch.equal(_unet_output(sd1), expected)


def test_files_for_another_model_or_damaged_are_refused_naming_them(sd1, tmp_path):
    other = Hypernetwork([1024], _options([1, 2, 1]))
    with pytest.raises(ValueError, match=r"\[1024\] match no attention layer"):
        attach(sd1.unet, other)
    assert 1024 not in context_widths(sd1.unet)
    saved = a1111_dict(other, INFO, torch.float32)
    saved["layer_structure"] = [1.0, 3.0, 1.0]  # does not fit the stored weights
    write_pt(tmp_path / "bad.pt", saved)
    with pytest.raises(HypernetworkFileError, match=r"bad\.pt: its weights do not fit its layer settings"):
        load_hypernetwork(tmp_path / "bad.pt")
    write_pt(tmp_path / "lora.pt", {"lora_unet_x.alpha": torch.tensor(1.0)})
    with pytest.raises(HypernetworkFileError, match=r"lora\.pt: not a hypernetwork"):
        read_hypernetwork(tmp_path / "lora.pt")
