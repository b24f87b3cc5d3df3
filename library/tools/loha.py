"""LyCORIS LoHa modules (``hada_*`` keys): read them beside kohya LoRA modules, and their weight update.

Per module ``<name>``: ``hada_w1_a`` [out, r], ``hada_w1_b`` [r, in*kh*kw], ``hada_w2_a``, ``hada_w2_b`` the same,
optionally ``hada_t1``/``hada_t2`` [r, r, kh, kw] (Tucker form: then ``hada_w*_a`` is [r, out] and ``hada_w*_b``
[r, in]), ``alpha`` and ``dora_scale``. The update is the element-wise (Hadamard) product of two low-rank products,
``(w1_a @ w1_b) * (w2_a @ w2_b) * alpha / r``, as A1111, ComfyUI and LyCORIS itself apply it. It has no low-rank
factors of its own, so only tools that work on the full update (merging into a model) can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from library.networks.lora_file import DORA_SCALE, LoraFileError, take_modules

W1A, W1B, W2A, W2B, T1, T2 = ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2"
HADA_SUFFIXES = (W1A, W1B, W2A, W2B, T1, T2)


@dataclass(frozen=True)
class HadaWeights:
    """The tensors of one LoHa module."""

    KIND = "LoHa"
    KEYS = "hada_*"

    w1a: torch.Tensor
    w1b: torch.Tensor
    w2a: torch.Tensor
    w2b: torch.Tensor
    t1: torch.Tensor | None
    t2: torch.Tensor | None
    alpha: float | None
    dora_scale: torch.Tensor | None

    @property
    def rank(self) -> int:
        return self.w1b.shape[0]

    @property
    def update_numel(self) -> int:
        if self.t1 is None:
            return self.w1a.shape[0] * self.w1b.shape[1]
        return self.w1a.shape[1] * self.w1b.shape[1] * self.t1[0, 0].numel()

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def delta(self, shape: torch.Size | None = None) -> torch.Tensor:
        """The unscaled update in float32: ``[out, in*kh*kw]``, or ``[out, in, kh, kw]`` in Tucker form; as a weight
        of ``shape`` when given (as :meth:`ModuleWeights.delta`)."""

        def half(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
            if t is None:
                return a.float() @ b.float()
            return torch.einsum("i j ..., j r, i p -> p r ...", t.float(), b.float(), a.float())

        delta = half(self.w1a, self.w1b, self.t1) * half(self.w2a, self.w2b, self.t2)
        return delta if shape is None else delta.reshape(shape)


def split_hada(
    state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, HadaWeights]]:
    """(the tensors of other modules, the LoHa modules by name) of a file's tensors."""
    return take_modules(
        state_dict, HADA_SUFFIXES, lambda name, alpha: _hada_module(state_dict, name, alpha, source), source
    )


def _hada_module(state_dict: Mapping[str, torch.Tensor], name: str, alpha: float | None, source: str) -> HadaWeights:
    missing = [suffix for suffix in (W1A, W1B, W2A, W2B) if name + suffix not in state_dict]
    if missing:
        raise LoraFileError(f"{source}: LoHa module {name!r} lacks {name}{missing[0]}; the file is incomplete")
    t1, t2 = state_dict.get(name + T1), state_dict.get(name + T2)
    if (t1 is None) != (t2 is None):
        raise LoraFileError(f"{source}: LoHa module {name!r} has only one of hada_t1/hada_t2; the file is incomplete")
    weights = HadaWeights(
        state_dict[name + W1A],
        state_dict[name + W1B],
        state_dict[name + W2A],
        state_dict[name + W2B],
        t1,
        t2,
        alpha,
        state_dict.get(name + DORA_SCALE),
    )
    try:
        weights.delta()
    except RuntimeError:
        raise LoraFileError(
            f"{source}: LoHa module {name!r} has hada_* tensors whose shapes do not fit together"
        ) from None
    return weights
