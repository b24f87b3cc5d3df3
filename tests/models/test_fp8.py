"""An fp8 base (``model.fp8_base``): the loader stores the Linear/Conv2d weights of the UNet and text encoders in
float8 and nothing else; each layer computes exactly what its up-cast weight computes, backward included, without
keeping the up-cast weight; the fp8 UNet's noise prediction stays close to the bf16 one."""

from __future__ import annotations

import pytest
import torch

from library.models.fp8 import fp8_layer_names, store_in_fp8
from library.models.loader import load_base_model

FP8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def sd1_pair(tiny_model_factory):
    folder = tiny_model_factory("sd1").folder
    return (load_base_model(folder, dtype=torch.bfloat16, vae_dtype=torch.float32),
            load_base_model(folder, dtype=torch.bfloat16, vae_dtype=torch.float32, fp8=True))


def _unet_inputs(unet, seed: int = 0, cross_width: int | None = None):
    generator = torch.Generator().manual_seed(seed)
    config = unet.config
    sample = torch.randn(2, config.in_channels, 8, 8, generator=generator)
    context = torch.randn(2, 5, cross_width or config.cross_attention_dim, generator=generator)
    return sample, torch.tensor([10, 500]), context


def test_only_linear_and_conv_weights_are_stored_in_fp8(sd1_pair):
    _, model = sd1_pair
    for component in (model.unet, *model.text_encoders):
        fp8_keys = {f"{name}.weight" for name in fp8_layer_names(component)}
        assert fp8_keys
        for key, tensor in component.state_dict().items():
            assert (tensor.dtype == FP8) == (key in fp8_keys), key
    unet_keys = dict(model.unet.named_parameters())
    assert unet_keys["conv_in.weight"].dtype == unet_keys["conv_out.weight"].dtype == torch.bfloat16
    assert model.unet.dtype == torch.bfloat16  # what diffusers pipelines cast their inputs to
    assert all(parameter.dtype == torch.float32 for parameter in model.vae.parameters())
    stored = sum(p.numel() for p in model.unet.parameters() if p.dtype == FP8)
    assert stored / sum(p.numel() for p in model.unet.parameters()) > 0.9


def test_fp8_unet_is_close_to_bf16(sd1_pair):
    (bf16, fp8) = sd1_pair
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = bf16.unet(*_unet_inputs(bf16.unet)).sample.float()
        actual = fp8.unet(*_unet_inputs(fp8.unet)).sample.float()
    relative = ((actual - expected).norm() / expected.norm()).item()
    assert 0 < relative < 0.1, relative


def test_flux_transformer_and_t5_compute_from_fp8_and_t5_keeps_its_wo_layers(tiny_model_factory):
    """T5 casts its feed-forward output layer's input to that layer's weight dtype (transformers keeps ``wo`` out of
    reduced precision): stored in fp8 it would be fed fp8 activations."""
    model = load_base_model(tiny_model_factory("flux1-dev").folder, dtype=torch.float32, fp8=True)
    t5 = model.text_encoders[1]
    names = fp8_layer_names(t5)
    assert names and not [name for name in names if name.endswith(".wo")]
    assert {p.dtype for name, p in t5.named_parameters() if name.endswith("wo.weight")} == {torch.float32}
    assert FP8 in {p.dtype for p in model.unet.parameters()}
    with torch.no_grad():
        assert torch.isfinite(t5(torch.tensor([[5, 6, 1]])).last_hidden_state).all()


def _layers() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.Flatten(2), torch.nn.Linear(16, 12),
    ).requires_grad_(False)


def test_an_fp8_layer_computes_what_its_upcast_weight_computes_in_both_passes():
    torch.manual_seed(0)
    reference, fp8 = _layers(), _layers()
    fp8.load_state_dict(reference.state_dict())
    assert store_in_fp8(fp8, torch.float32) == 3
    with torch.no_grad():
        for plain, stored in zip(reference.parameters(), fp8.parameters()):
            plain.copy_(stored.float())  # the reference holds exactly the up-cast fp8 weights
    x = torch.randn(2, 4, 8, 8)
    x_reference, x_fp8 = x.clone().requires_grad_(), x.clone().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append((t.dtype, tuple(t.shape))) or t,
                                                  lambda t: t):
        out = fp8(x_fp8)
    expected = reference(x_reference)
    assert torch.equal(out, expected)
    expected.square().sum().backward()
    out.square().sum().backward()
    torch.testing.assert_close(x_fp8.grad, x_reference.grad)
    weight_shapes = {tuple(p.shape) for p in fp8.parameters() if p.ndim > 1}
    kept_weights = [(dtype, shape) for dtype, shape in saved if shape in weight_shapes]
    assert sorted(kept_weights) == sorted((FP8, shape) for shape in weight_shapes)  # no up-cast copy is kept


def test_sdxl_fp8_unet_and_encoders_run_under_autocast(tiny_model_factory):
    model = load_base_model(tiny_model_factory("sdxl").folder, dtype=torch.bfloat16, vae_dtype=torch.float32,
                            fp8=True)
    assert all(module.get_submodule(name).weight.dtype == FP8
               for module in (model.unet, *model.text_encoders) for name in fp8_layer_names(module))
    tokens = torch.tensor([[49406, 320, 49407] + [49407] * 4])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = [encoder(tokens, output_hidden_states=True).hidden_states[-2] for encoder in model.text_encoders]
        pooled = model.text_encoders[1](tokens).text_embeds
        context = torch.cat(hidden, dim=-1)
        sample, timesteps, _ = _unet_inputs(model.unet)
        time_ids = torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32)
        out = model.unet(sample, timesteps, context.expand(2, -1, -1),
                         added_cond_kwargs={"text_embeds": pooled.expand(2, -1), "time_ids": time_ids}).sample
    assert out.shape == sample.shape and torch.isfinite(out).all()
