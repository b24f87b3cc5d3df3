"""A1111's hypernetwork: per context width, two small residual MLPs, one on the attention's key input and one on
its value input, and the hooks that apply them to a diffusers UNet.

The MLP is built layer by layer exactly as A1111 builds it, so its ``state_dict`` has A1111's keys
(``linear.0.weight``, ``linear.0.bias``, ``linear.2.weight``...: the index counts activation, LayerNorm and
Dropout modules too): for each step of ``layer_structure`` a Linear from ``width * s[i]`` to ``width * s[i+1]``,
then the activation (not after the last Linear unless ``activate_output``; none for "linear"), then a LayerNorm
when asked, then a Dropout where ``dropout_structure[i+1] > 0``. The forward pass is ``x + mlp(x)`` while training
and ``x + mlp(x) * strength`` otherwise.

A1111 applies a width's pair in every attention layer whose key/value input has that width (its ``enable_sizes``,
"Modules": 768, 320, 640, 1280, 1024): the cross-attention layers for the text context (768 wide in SD1, 1024 in SD2,
2048 in SDXL), and the self-attention layers, whose key/value input is the features themselves (320, 640 and 1280 wide
in SD1/SD2's UNets). The hooks here do the same, as forward pre-hooks on ``to_k`` and ``to_v``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn.init import kaiming_normal_, kaiming_uniform_, normal_, xavier_normal_, xavier_uniform_, zeros_

MODULE_NAME = "furnace_hypernetwork"
"""The name under which the hypernetwork is attached to the UNet (so it trains, saves state and wraps with it)."""
KEY, VALUE = "k", "v"

_NAMED_ACTIVATIONS = {
    "linear": None,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,  # A1111's "swish" is torch's Hardswish
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}


def activation_module(name: str) -> torch.nn.Module | None:
    """A fresh activation by A1111's name: its named ones, else torch's activation class of that lower-case name."""
    if name in _NAMED_ACTIVATIONS:
        factory = _NAMED_ACTIVATIONS[name]
        return factory() if factory is not None else None
    by_name = {cls.__name__.lower(): cls for cls in vars(torch.nn.modules.activation).values()
               if isinstance(cls, type) and issubclass(cls, torch.nn.Module)}
    if name not in by_name:
        raise ValueError(f"unknown hypernetwork activation {name!r}")
    return by_name[name]()


def default_dropout_structure(layer_structure: Sequence[float], use_dropout: bool,
                              last_layer_dropout: bool) -> list[float]:
    """A1111's dropout per layer when none is given: 0.3 after each hidden layer but the last (that one too with
    ``last_layer_dropout``), never after the input or the output."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    hidden = [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0.0]
    return [0.0, *hidden, 0.0]


@dataclass(frozen=True)
class HypernetworkOptions:
    """The shape of every MLP of a hypernetwork, under A1111's names (its file stores them with the weights)."""

    layer_structure: tuple[float, ...] = (1.0, 2.0, 1.0)
    activation_func: str = "linear"
    weight_init: str = "Normal"
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: tuple[float, ...] = (0.0, 0.0, 0.0)
    activate_output: bool = False
    last_layer_dropout: bool = False


class HypernetworkMLP(torch.nn.Module):
    """One residual MLP (A1111's ``HypernetworkModule``); ``strength`` scales it outside training."""

    def __init__(self, width: int, options: HypernetworkOptions) -> None:
        super().__init__()
        self.strength = 1.0
        structure, layers = options.layer_structure, []
        for i in range(len(structure) - 1):
            layers.append(torch.nn.Linear(int(width * structure[i]), int(width * structure[i + 1])))
            last = i == len(structure) - 2
            activation = activation_module(options.activation_func) if options.activate_output or not last else None
            if activation is not None:
                layers.append(activation)
            if options.add_layer_norm:
                layers.append(torch.nn.LayerNorm(int(width * structure[i + 1])))
            if options.dropout_structure[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=options.dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*layers)
        self._initialise(options)

    def _initialise(self, options: HypernetworkOptions) -> None:
        """A1111's initialisations; LayerNorms always get the "Normal" one (std 0.01, zero bias)."""
        nonlinearity = "leaky_relu" if options.activation_func == "leakyrelu" else "relu"
        init = {
            "XavierUniform": xavier_uniform_,
            "XavierNormal": xavier_normal_,
            "KaimingUniform": lambda weight: kaiming_uniform_(weight, nonlinearity=nonlinearity),
            "KaimingNormal": lambda weight: kaiming_normal_(weight, nonlinearity=nonlinearity),
        }
        for layer in self.linear:
            if not isinstance(layer, (torch.nn.Linear, torch.nn.LayerNorm)):
                continue
            if options.weight_init == "Normal" or isinstance(layer, torch.nn.LayerNorm):
                normal_(layer.weight, mean=0.0, std=0.01)
            else:
                init[options.weight_init](layer.weight)
            zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x) * (1.0 if self.training else self.strength)


class Hypernetwork(torch.nn.Module):
    """The MLP pairs by context width: ``pairs[str(width)]`` is ``[key MLP, value MLP]``."""

    def __init__(self, widths: Iterable[int], options: HypernetworkOptions) -> None:
        super().__init__()
        self.options = options
        self.pairs = torch.nn.ModuleDict({
            str(width): torch.nn.ModuleList([HypernetworkMLP(width, options), HypernetworkMLP(width, options)])
            for width in sorted(set(widths))
        })

    @property
    def widths(self) -> list[int]:
        return [int(width) for width in self.pairs]

    def mlp(self, width: int, role: str) -> HypernetworkMLP | None:
        """The MLP for a key (``"k"``) or value (``"v"``) input of ``width``; None when the width has no pair."""
        pair = self.pairs[str(width)] if str(width) in self.pairs else None
        return None if pair is None else pair[0 if role == KEY else 1]

    def set_strength(self, strength: float) -> None:
        for module in self.modules():
            if isinstance(module, HypernetworkMLP):
                module.strength = strength

    def mlp_state_dicts(self) -> Iterator[tuple[int, str, dict[str, torch.Tensor]]]:
        """(width, "k" or "v", the MLP's state dict in A1111's keys) for every MLP."""
        for width in self.widths:
            for role in (KEY, VALUE):
                yield width, role, dict(self.mlp(width, role).state_dict())


def context_widths(unet: torch.nn.Module) -> list[int]:
    """The widths of the key/value inputs of every attention layer of ``unet`` (a diffusers UNet)."""
    return sorted({module.to_k.in_features for module in _attentions(unet)})


def _attentions(unet: torch.nn.Module) -> Iterator[torch.nn.Module]:
    from diffusers.models.attention_processor import Attention

    return (module for module in unet.modules() if isinstance(module, Attention) and hasattr(module, "to_k"))


def _pre_hook(mlp: HypernetworkMLP):
    """Replace a projection's input by the MLP's output, computed in the MLP's dtype and handed back in the input's."""

    def hook(module: torch.nn.Module, args: tuple) -> tuple:
        context, *rest = args
        dtype = next(mlp.parameters()).dtype
        return (mlp(context.to(dtype)).to(context.dtype), *rest)

    return hook


def attach(unet: torch.nn.Module, hypernetwork: Hypernetwork) -> list[torch.utils.hooks.RemovableHandle]:
    """Apply ``hypernetwork`` in every attention layer of ``unet`` whose key/value input has a width it holds, and
    register it as a submodule of ``unet`` (its parameters then train, wrap and save with the UNet's). Returns the
    hook handles; :func:`detach` undoes everything. Raises ValueError when no layer has any of its widths."""
    handles = []
    for attention in _attentions(unet):
        width = attention.to_k.in_features
        if hypernetwork.mlp(width, KEY) is None:
            continue
        handles.append(attention.to_k.register_forward_pre_hook(_pre_hook(hypernetwork.mlp(width, KEY))))
        handles.append(attention.to_v.register_forward_pre_hook(_pre_hook(hypernetwork.mlp(width, VALUE))))
    if not handles:
        raise ValueError(f"the hypernetwork's widths {hypernetwork.widths} match no attention layer of the UNet "
                         f"(its key/value inputs are {context_widths(unet)} wide): it was made for another model")
    unet.add_module(MODULE_NAME, hypernetwork)
    return handles


def detach(unet: torch.nn.Module, handles: Iterable[torch.utils.hooks.RemovableHandle]) -> None:
    """Undo :func:`attach`: the UNet computes as it did before."""
    for handle in handles:
        handle.remove()
    delattr(unet, MODULE_NAME)
