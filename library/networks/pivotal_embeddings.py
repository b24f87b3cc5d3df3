"""The embeddings that go with a pivotal-tuning LoRA file, and putting them into a model to render with it.

A pivotal LoRA was trained together with a new token's embedding; rendering it without that embedding prompts an
untrained token. The embedding travels in one of two places: bundled inside the LoRA file (``bundle_emb.<token>.*``,
:mod:`bundled_embeddings`), or beside it as ``<file name>_emb.safetensors``, the textual-inversion file diffusers'
scripts write and ``load_textual_inversion`` reads (its token in ``ss_token_string``, else as
:meth:`Embedding.token` names it). Previews of a LoRA (the
``compare`` grid, a run's ``compare_at_end``) put the file's embeddings into the model with :func:`embeddings_applied`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from library.models.families import ModelFamily
from library.models.token_embeddings import input_embeddings, set_token
from library.networks.bundled_embeddings import PREFIX, is_bundled, split_bundled
from library.networks.embedding_file import Embedding, read_embedding_file

EMBEDDING_SUFFIX = "_emb"  # the embedding beside a LoRA file (the name diffusers' pivotal-tuning scripts use)

Embeddings = dict[str, dict[str, torch.Tensor]]
"""token -> embedding-file tensors (``emb_params``, or ``clip_l`` and ``clip_g``)."""


def embedding_companion(path: Path) -> Path:
    """The separate embedding file that goes with the LoRA file ``path``."""
    return path.with_name(f"{path.stem}{EMBEDDING_SUFFIX}.safetensors")


def companion_embedding(path: Path) -> Embeddings:
    """The embedding of ``path``'s ``_emb`` companion by its token ({} without one)."""
    companion = embedding_companion(path)
    if not companion.is_file():
        return {}
    embedding = read_embedding_file(companion)
    return {embedding.token(companion): embedding.vectors}


def lora_embeddings(path: Path, tensors: Mapping[str, torch.Tensor] | None = None) -> Embeddings:
    """Every embedding that goes with the LoRA file ``path`` (``tensors``: its tensors, when already read): the
    bundled ones, and its companion's (a token bundled in the file wins over the companion's copy, which a run saving
    both writes with the same rows)."""
    if tensors is None:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys() if is_bundled(key)}
    return {**companion_embedding(path), **split_bundled(tensors)[1]}


def embedding_places(path: Path) -> dict[str, Path]:
    """token -> the file that holds the embedding going with the LoRA file ``path``: ``path`` itself for a bundled
    one, else its ``_emb`` companion."""
    with safe_open(str(path), framework="pt") as handle:
        bundled = {key[len(PREFIX):].partition(".")[0] for key in handle.keys() if is_bundled(key)}
    companion = {token: embedding_companion(path) for token in companion_embedding(path)}
    return {**companion, **{token: path for token in sorted(bundled)}}


@contextlib.contextmanager
def embeddings_applied(
    family: ModelFamily, tokenizers: Sequence, encoders: Sequence[torch.nn.Module], lora: Path,
    tensors: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[list[str]]:
    """Inside the block, each token of the LoRA file's embeddings (:func:`lora_embeddings`) prompts with them: added
    to the tokenizers, or its rows replaced when it is there already (rows put back at the end). A token added here
    stays in the tokenizers afterwards (a tokenizer cannot drop one), with these rows until the next file's replace
    them. Yields the tokens."""
    embeddings = lora_embeddings(lora, tensors)
    saved: list[tuple[torch.nn.Module, list[int], torch.Tensor]] = []
    try:
        for token, vectors in embeddings.items():
            rows = Embedding(dict(vectors), {}).for_family(family, lora)
            for tokenizer, encoder, encoder_rows in zip(tokenizers, encoders, rows):
                added, previous = set_token(tokenizer, encoder, token, encoder_rows)
                if previous is not None:
                    saved.append((encoder, added.ids, previous))
        yield list(embeddings)
    finally:
        with torch.no_grad():
            for encoder, ids, previous in reversed(saved):
                input_embeddings(encoder).weight[ids] = previous
