"""T5 encoder names: ``t5xxl_fp16.safetensors`` (and ComfyUI checkpoints) use transformers' own ``T5EncoderModel``
keys, so every tensor is copied. The input embedding is tied to ``shared.weight``: it is written under both names, as
other programs expect, and read from ``shared.weight`` only."""

from __future__ import annotations

from collections.abc import Iterable

from library.models.single_file.rules import COPY, KeyRule

SHARED = "shared.weight"
TIED_EMBEDDING = "encoder.embed_tokens.weight"


def t5_rules(keys: Iterable[str]) -> list[KeyRule]:
    rules = [KeyRule(key, (key,)) for key in keys if key != TIED_EMBEDDING]
    return [*rules, KeyRule(TIED_EMBEDDING, (SHARED,), COPY, placeholder=True)]
