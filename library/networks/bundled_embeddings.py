"""Textual-inversion embeddings stored inside a LoRA file (pivotal tuning), under the keys A1111 reads.

A1111's LoRA loader (``extensions-builtin/Lora/networks.py``) takes every key ``bundle_emb.<token>.<rest>`` as part of
an embedding named ``<token>``: ``string_to_param.<k>`` as the vectors of an SD1/SD2 embedding (the layout of its
``.pt`` files), anything else (``clip_l``, ``clip_g`` for SDXL, ``emb_params``) as a tensor of that name, the way a
standalone embedding file holds it. sd-scripts' and kohya_ss's bundling tools write the same keys. Everything else in
the file is the adapter itself; a reader of the adapters sets the bundled keys aside with :func:`split_bundled`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from library.networks.embedding_file import SINGLE_ENCODER_KEY

PREFIX = "bundle_emb."
_STRING_TO_PARAM = "string_to_param."
_SD1_BUNDLE_KEY = _STRING_TO_PARAM + "*"  # the key A1111's own .pt embeddings use inside string_to_param


def is_bundled(key: str) -> bool:
    return key.startswith(PREFIX)


def bundle_tensors(token: str, vectors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA-file keys of an embedding given as its embedding-file tensors (``emb_params``, or ``clip_l`` and
    ``clip_g``): SD1/SD2 vectors as ``bundle_emb.<token>.string_to_param.*``, SDXL's under their own names."""
    return {
        f"{PREFIX}{token}.{_SD1_BUNDLE_KEY if key == SINGLE_ENCODER_KEY else key}": tensor
        for key, tensor in vectors.items()
    }


def split_bundled(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """(the adapter's tensors, the bundled embeddings by token as embedding-file tensors) of a LoRA file's tensors."""
    adapter: dict[str, torch.Tensor] = {}
    bundled: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if not is_bundled(key):
            adapter[key] = tensor
            continue
        token, _, name = key[len(PREFIX):].partition(".")
        bundled.setdefault(token, {})[SINGLE_ENCODER_KEY if name.startswith(_STRING_TO_PARAM) else name] = tensor
    return adapter, bundled

