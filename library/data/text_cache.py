"""Text-encoder outputs computed once per distinct caption.

When the text encoders are frozen and captions never change between steps (no shuffle, no dropout), encoding the
same caption every step is wasted work: encode each distinct caption once before training and look it up.
The cache takes the encoding function rather than the encoders, so the caller decides how (wrapped modules,
device, ``no_grad``, ``clip_skip``) and the cache only decides when.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from library.models.text_encoding import TextConditioning

logger = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], TextConditioning]


class TextEncoderCache:
    """caption -> (hidden states ``[tokens, width]``, pooled ``[width]`` or None), kept on the CPU."""

    def __init__(self, encode: EncodeFn, batch_size: int = 16) -> None:
        self.encode = encode
        self.batch_size = batch_size
        self._entries: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def build(self, captions: Iterable[str]) -> None:
        """Encode every caption not cached yet, in batches, with a progress bar."""
        todo = sorted(set(captions) - self._entries.keys())
        if not todo:
            return
        logger.info("caching text-encoder outputs of %d distinct caption(s)", len(todo))
        with torch.no_grad(), tqdm(total=len(todo), desc="caching captions", unit="caption", disable=None) as bar:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                encoded = self.encode(chunk)
                for row, caption in enumerate(chunk):
                    pooled = None if encoded.pooled is None else encoded.pooled[row].cpu()
                    self._entries[caption] = (encoded.hidden_states[row].cpu(), pooled)
                bar.update(len(chunk))

    def lookup(self, captions: list[str]) -> TextConditioning:
        """Stacked conditioning of a batch of captions (on the CPU); each must have been built."""
        missing = [caption for caption in captions if caption not in self._entries]
        if missing:
            raise KeyError(f"caption not in the text-encoder cache: {missing[0]!r}")
        hidden = torch.stack([self._entries[caption][0] for caption in captions])
        pooled_rows = [self._entries[caption][1] for caption in captions]
        pooled = None if any(row is None for row in pooled_rows) else torch.stack(pooled_rows)  # type: ignore[arg-type]
        return TextConditioning(hidden, pooled)
