"""The live network: init, scale and multiplier, training touches only adapters, save/load round trips, errors."""

from __future__ import annotations

import pytest
import torch

from library.networks import (
    LoraFileError,
    LoraOptions,
    inject_lora,
    merge_lora_into,
    read_lora_file,
    write_lora_file,
)


def _unet_output(components, seed: int = 0) -> torch.Tensor:
    """One UNet forward on fixed random inputs (SDXL gets its extra conditioning)."""
    generator = torch.Generator().manual_seed(seed)
    unet = components.unet
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled, generator=generator),
                                       "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])}}
    return unet(latents, torch.tensor([500]), encoder_hidden_states=context, **extra).sample


def _text_output(components) -> torch.Tensor:
    return components.text_encoders[0](torch.tensor([[49406, 320, 1125, 49407]]))[0]


def test_fresh_adapters_change_nothing_and_scale_is_alpha_over_rank(tiny):
    family, components = tiny("sd1")
    with torch.no_grad():
        before = _unet_output(components), _text_output(components)
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=4, alpha=2.0))
    with torch.no_grad():
        assert torch.equal(_unet_output(components), before[0])
        assert torch.equal(_text_output(components), before[1])
    assert {layer.scaling["default"] for layer in network.modules.values()} == {0.5}
    network.set_multiplier(3.0)
    assert {layer.scaling["default"] for layer in network.modules.values()} == {1.5}


@pytest.mark.parametrize(
    "options",
    [LoraOptions(dim=4, alpha=2.0), LoraOptions(dim=4, alpha=2.0, conv_dim=2, use_dora=True)],
    ids=["lora", "locon-dora"],
)
def test_live_network_equals_merged_weights_at_any_multiplier(tiny, perturb, options):
    family, components = tiny("sd1")
    network = inject_lora(family, components.unet, components.text_encoders, options)
    perturb(network)
    for multiplier in (1.0, 0.5):
        network.set_multiplier(multiplier)
        _, plain = tiny("sd1")
        merge_lora_into(family, plain.unet, plain.text_encoders, network.state_dict_kohya(), multiplier)
        with torch.no_grad():
            torch.testing.assert_close(_unet_output(components), _unet_output(plain), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(_text_output(components), _text_output(plain), rtol=1e-4, atol=1e-5)
    network.set_multiplier(0.0)
    _, base = tiny("sd1")
    with torch.no_grad():
        if not options.use_dora:  # at multiplier 0 a plain LoRA is exactly the base model
            assert torch.equal(_unet_output(components), _unet_output(base))


def test_training_steps_change_only_adapters(tiny):
    family, components = tiny("sd1")
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=4, alpha=4.0))
    components.unet.train()
    components.text_encoders[0].train()
    before = {
        (index, key): value.clone()
        for index, module in enumerate([components.unet, *components.text_encoders])
        for key, value in module.state_dict().items()
    }
    parts = network.parameters_by_part()
    assert sum(len(params) for params in parts.values()) == len(network.trainable_parameters())
    optimizer = torch.optim.AdamW([{"params": parts["unet"]}, {"params": parts["text_encoder"], "lr": 5e-4}], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        context = components.text_encoders[0](torch.tensor([[49406, 320, 1125, 49407]]))[0]
        latents = torch.randn(1, 4, 8, 8, generator=generator)
        prediction = components.unet(latents, torch.tensor([500]), encoder_hidden_states=context).sample
        loss = (prediction - latents).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    changed = {key for key, value in before.items() if not torch.equal(value, _current(components, key))}
    adapter_keys = {key for key in before if ".lora_" in key[1]}
    assert changed and changed <= adapter_keys
    assert {key for key in changed if "lora_B" in key[1]}, "up matrices must learn"
    modules = (components.unet, *components.text_encoders)
    base = [p for m in modules for n, p in m.named_parameters() if ".lora_" not in n]
    assert not any(p.requires_grad for p in base)


def _current(components, key) -> torch.Tensor:
    index, name = key
    return [components.unet, *components.text_encoders][index].state_dict()[name]


def test_parameters_by_part_split_unet_from_text_encoders(tiny):
    family, components = tiny("sdxl")
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=2))
    parts = network.parameters_by_part()
    owners = {id(p): name for name, layer in network.modules.items() for p in layer.parameters()}
    assert parts["unet"] and all(owners[id(p)].startswith("lora_unet_") for p in parts["unet"])
    assert {owners[id(p)][:9] for p in parts["text_encoder"]} == {"lora_te1_", "lora_te2_"}


@pytest.mark.parametrize(
    ("options", "prefixes"),
    [(LoraOptions(dim=2, train_unet_only=True), {"lora_unet_"}),
     (LoraOptions(dim=2, train_text_encoder_only=True), {"lora_te1_", "lora_te2_"})],
)
def test_train_only_one_part(tiny, tmp_path, options, prefixes):
    family, components = tiny("sdxl")
    network = inject_lora(family, components.unet, components.text_encoders, options)
    path = tmp_path / "part.safetensors"
    network.save(path, "fp16", {})
    tensors, _ = read_lora_file(path)
    present = {"_".join(key.split("_")[:2]) + "_" for key in tensors}
    assert present == prefixes


@pytest.mark.parametrize(
    ("family_name", "options"),
    [("sd1", LoraOptions(dim=4, alpha=2.0, conv_dim=2, conv_alpha=0.5, use_dora=True)),
     ("sdxl", LoraOptions(dim=4, alpha=2.0, conv_dim=2))],
)
@pytest.mark.parametrize("precision", ["float", "bf16"])
def test_save_load_round_trip(tiny, perturb, tmp_path, family_name, options, precision):
    family, components = tiny(family_name)
    network = inject_lora(family, components.unet, components.text_encoders, options)
    perturb(network)
    path = tmp_path / "lora.safetensors"
    network.save(path, precision, {"ss_output_name": "lora"})

    _, fresh = tiny(family_name)
    restored = inject_lora(family, fresh.unet, fresh.text_encoders, options)
    assert restored.load_file(path)["ss_output_name"] == "lora"
    tensors, _ = read_lora_file(path)
    saved = restored.state_dict_kohya(tensors[next(iter(tensors))].dtype)
    assert set(saved) == set(tensors)
    for key, tensor in tensors.items():
        assert torch.equal(saved[key], tensor), key
    if precision == "float":
        original, reloaded = network.state_dict_kohya(), restored.state_dict_kohya()
        assert all(torch.equal(reloaded[key], value) for key, value in original.items())


def test_file_alpha_replaces_the_configured_alpha(tiny, tmp_path):
    family, components = tiny("sd1")
    network = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=4, alpha=2.0))
    _, fresh = tiny("sd1")
    other = inject_lora(family, fresh.unet, fresh.text_encoders, LoraOptions(dim=4, alpha=8.0))
    other.set_multiplier(0.5)
    other.load_kohya(network.state_dict_kohya())
    assert {layer.scaling["default"] for layer in other.modules.values()} == {0.5 * 2.0 / 4}


def test_load_errors_name_the_problem(tiny, tmp_path):
    family, components = tiny("sd1")
    unet_only = inject_lora(family, components.unet, components.text_encoders, LoraOptions(dim=4, train_unet_only=True))
    tensors = unet_only.state_dict_kohya()

    _, fresh = tiny("sd1")
    full = inject_lora(family, fresh.unet, fresh.text_encoders, LoraOptions(dim=4))
    with pytest.raises(LoraFileError, match=r"lacks 24 module\(s\).*lora_te_text_model_encoder_layers"):
        full.load_kohya(tensors, source="x.safetensors")
    full.load_kohya(tensors, strict=False)  # the UNet part loads
    name = "lora_unet_mid_block_attentions_0_proj_out"
    assert torch.equal(full.modules[name].lora_A["default"].weight, tensors[f"{name}.lora_down.weight"])

    # One module of another rank: the error names it, and nothing is loaded.
    _, third = tiny("sd1")
    target = inject_lora(family, third.unet, third.text_encoders, LoraOptions(dim=4, train_unet_only=True))
    before = target.state_dict_kohya()
    rank_8 = {f"{name}.lora_down.weight": torch.ones(8, 64, 1, 1), f"{name}.lora_up.weight": torch.ones(64, 8, 1, 1)}
    odd = {**tensors, **rank_8}
    with pytest.raises(LoraFileError, match=rf"{name}.lora_down.weight .* the file's rank \(8\)"):
        target.load_kohya(odd)
    after = target.state_dict_kohya()
    assert all(torch.equal(after[key], value) for key, value in before.items())

    _, fourth = tiny("sd1")
    dora_options = LoraOptions(dim=4, train_unet_only=True, use_dora=True)
    dora = inject_lora(family, fourth.unet, fourth.text_encoders, dora_options)
    with pytest.raises(LoraFileError, match="lacks a dora_scale; set network use_dora"):
        dora.load_kohya(tensors)


def test_bad_files_give_one_line_errors(tiny, tmp_path):
    with pytest.raises(LoraFileError, match="does not exist"):
        read_lora_file(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(LoraFileError, match="not a readable .safetensors file"):
        read_lora_file(garbage)
    loha = tmp_path / "loha.safetensors"
    write_lora_file(loha, {"lora_unet_x.hada_w1_a": torch.ones(2, 2)}, {})
    with pytest.raises(LoraFileError, match=r"'lora_unet_x.hada_w1_a' is not part of a kohya LoRA"):
        read_lora_file(loha)
    half = tmp_path / "half.safetensors"
    write_lora_file(half, {"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, {})
    with pytest.raises(LoraFileError, match="lacks lora_unet_x.lora_up.weight"):
        read_lora_file(half)

    family, components = tiny("sdxl")
    sd1_file = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.ones(2, 32, 1, 1),
                "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.ones(32, 2, 1, 1)}
    with pytest.raises(LoraFileError, match="match nothing in this Stable Diffusion XL 1.0 model"):
        merge_lora_into(family, components.unet, components.text_encoders, sd1_file)
