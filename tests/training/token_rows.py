"""What a rendering prompted with: the embedding rows text encoders looked up for added tokens, recorded by a forward
hook on every embedding table (the real lookup, whatever code path led to it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

CLIP_VOCAB = 49408  # the base tokenizer's size: ids from here on are added tokens


@contextlib.contextmanager
def added_token_rows() -> Iterator[list[torch.Tensor]]:
    """Inside the block, each lookup of an added token's id appends the rows looked up ([tokens, width], in
    prompt order) to the yielded list."""
    seen: list[torch.Tensor] = []

    def record(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Embedding) and module.num_embeddings > CLIP_VOCAB and args:
            added = args[0] >= CLIP_VOCAB
            if added.any():
                seen.append(output[added].detach().clone())

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        yield seen
    finally:
        handle.remove()
