"""Frozen weights stored in float8 (``float8_e4m3fn``) and up-cast one layer at a time for compute.

A frozen base in fp8 takes half the memory of bf16. Only the weights of the Linear and Conv2d layers are stored in
fp8: they are nearly all of a UNet's or text encoder's parameters. Biases, norms and embeddings stay in the compute
dtype (small, and the most sensitive to rounding), as do the UNet's first and last convolutions (``conv_in``,
``conv_out``: tiny, and they touch the latents directly; it also keeps ``unet.dtype``, which diffusers pipelines
read from the first parameter, the compute dtype), and the layers a transformers model lists in
``_keep_in_fp32_modules`` (T5's feed-forward output ``wo``: T5 casts that layer's input to its weight's dtype, so
an fp8 weight would feed it fp8 activations).

Each fp8 layer's forward up-casts its weight to the compute dtype, uses it and drops it. The backward pass up-casts
again instead of keeping the up-cast copy: autograd would otherwise save every layer's compute-dtype weight for the
input gradient (which a LoRA run needs everywhere below its first adapter), and hold more than a bf16 base. The
layers keep their class and ``weight`` name (peft wraps them like any Linear/Conv2d), and carry ``compute_dtype``, which peft reads to give the adapters the compute dtype rather than the storage dtype.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

KEPT_IN_COMPUTE_DTYPE = ("conv_in", "conv_out")
"""Top-level module names kept in the compute dtype (the UNet's first and last convolutions)."""


def fp8_dtype() -> torch.dtype | None:
    """``torch.float8_e4m3fn``, or None on a torch build without float8 types."""
    return getattr(torch, "float8_e4m3fn", None)


def is_storage_only(dtype: torch.dtype) -> bool:
    """True for a dtype weights are stored in but never computed in (nothing runs or autocasts in fp8)."""
    return dtype.is_floating_point and dtype.itemsize == 1


def fp8_layer_names(module: nn.Module) -> list[str]:
    """The sub-modules of ``module`` whose weights are stored in fp8: Linear and Conv2d layers (zero padding, as
    every SD convolution has), except the ones :data:`KEPT_IN_COMPUTE_DTYPE` and those whose path has a part the
    model keeps out of reduced precision (transformers' ``_keep_in_fp32_modules``)."""
    kept = set(getattr(module, "_keep_in_fp32_modules", None) or ())
    return [
        name for name, layer in module.named_modules()
        if type(layer) in _FORWARDS and name not in KEPT_IN_COMPUTE_DTYPE and not kept.intersection(name.split("."))
        and getattr(layer, "padding_mode", "zeros") == "zeros" and not isinstance(getattr(layer, "padding", 0), str)
    ]


def fp8_weight_keys(module: nn.Module) -> set[str]:
    """State-dict keys of the weights :func:`fp8_layer_names` stores in fp8 (works on an empty, meta module)."""
    return {f"{name}.weight" for name in fp8_layer_names(module)}


def store_in_fp8(module: nn.Module, compute_dtype: torch.dtype) -> int:
    """Make the layers of :func:`fp8_layer_names` up-casting fp8 layers in place (weights not yet in fp8 are cast);
    returns how many. Each keeps its class (peft builds a conv adapter of its base layer's type, which must stay a
    plain Conv2d); only its ``forward`` and ``compute_dtype`` are its own."""
    storage = fp8_dtype()
    if storage is None:
        raise RuntimeError("this torch build has no float8_e4m3fn")
    names = fp8_layer_names(module)
    for name in names:
        layer = module.get_submodule(name)
        layer.forward = types.MethodType(_FORWARDS[type(layer)], layer)
        layer.compute_dtype = compute_dtype
        if layer.weight.dtype != storage:
            layer.weight = nn.Parameter(layer.weight.detach().to(storage), requires_grad=False)
    return len(names)


class _UpcastLinear(torch.autograd.Function):
    """``F.linear`` with an fp8 weight up-cast in forward and again in backward (nothing up-cast is saved)."""

    @staticmethod
    def forward(ctx, x, weight, bias, compute_dtype):
        ctx.save_for_backward(weight)
        ctx.input_dtype, ctx.compute_dtype = x.dtype, compute_dtype
        return F.linear(x, weight.to(compute_dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_input = grad.matmul(weight.to(grad.dtype)).to(ctx.input_dtype) if ctx.needs_input_grad[0] else None
        return grad_input, None, None, None


class _UpcastConv2d(torch.autograd.Function):
    """``F.conv2d`` with an fp8 weight up-cast in forward and again in backward (nothing up-cast is saved)."""

    @staticmethod
    def forward(ctx, x, weight, bias, compute_dtype, geometry):
        ctx.save_for_backward(weight)
        ctx.input_shape, ctx.input_dtype, ctx.geometry = x.shape, x.dtype, geometry
        return F.conv2d(x, weight.to(compute_dtype), bias, *geometry)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.nn.grad.conv2d_input(
                ctx.input_shape, weight.to(grad.dtype), grad, *ctx.geometry
            ).to(ctx.input_dtype)
        return grad_input, None, None, None, None


def _linear_forward(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return _UpcastLinear.apply(x, layer.weight, layer.bias, layer.compute_dtype)


def _conv2d_forward(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    geometry = (layer.stride, layer.padding, layer.dilation, layer.groups)
    return _UpcastConv2d.apply(x, layer.weight, layer.bias, layer.compute_dtype, geometry)


_FORWARDS = {nn.Linear: _linear_forward, nn.Conv2d: _conv2d_forward}
