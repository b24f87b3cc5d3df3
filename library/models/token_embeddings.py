"""New tokens in a tokenizer and their embedding rows in a text encoder: what textual inversion trains and what
loading an embedding file does.

A token of ``n`` vectors is ``n`` tokenizer entries (``tok``, ``tok_1`` .. ``tok_{n-1}``, the names diffusers
gives them); the word ``tok`` in a caption or prompt stands for all of them, which :func:`expand_tokens` writes
out before tokenizing (``library.models.text_encoding.tokenize`` calls it), so training captions, previews and
the toy-world judge's prompts all see the same token sequence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from library.models.errors import ModelLoadError

_EXPANSIONS = "furnace_token_expansions"  # tokenizer attribute: {word: "tok tok_1 ..."} of its multi-vector tokens


@dataclass(frozen=True)
class AddedToken:
    """A token added to one tokenizer / text encoder pair: its word, and the ids of its rows."""

    token: str
    ids: list[int]


def token_names(token: str, num_vectors: int) -> list[str]:
    return [token] + [f"{token}_{index}" for index in range(1, num_vectors)]


def input_embeddings(encoder: torch.nn.Module) -> torch.nn.Embedding:
    """The token embedding table (a distributed wrapper, ``.module``, is looked through)."""
    return getattr(encoder, "module", encoder).get_input_embeddings()


def add_token(tokenizer, encoder: torch.nn.Module, token: str, vectors: torch.Tensor) -> AddedToken:
    """Add ``token`` with ``vectors`` ([num_vectors, width]) as its embedding rows; the other rows are untouched.
    A word the tokenizer already has as one token is refused (its meaning would be overwritten)."""
    names = token_names(token, vectors.shape[0])
    table = input_embeddings(encoder)
    if vectors.shape[1] != table.embedding_dim:
        raise ModelLoadError(
            f"embedding for {token!r} has vectors of width {vectors.shape[1]}, but this text encoder's are "
            f"{table.embedding_dim} wide: the embedding was made for another model family"
        )
    known = [name for name in names if _is_one_token(tokenizer, name)]
    if known:
        raise ModelLoadError(
            f"token {known[0]!r} is already in the tokenizer's vocabulary; choose another token_string "
            "(a made-up word such as 'frnc')"
        )
    tokenizer.add_tokens(names)
    ids = tokenizer.convert_tokens_to_ids(names)
    _grow(encoder, len(tokenizer))
    with torch.no_grad():
        input_embeddings(encoder).weight[ids] = vectors.to(table.weight.device, table.weight.dtype)
    if len(names) > 1:
        setattr(tokenizer, _EXPANSIONS, {**getattr(tokenizer, _EXPANSIONS, {}), token: " ".join(names)})
    return AddedToken(token, list(ids))


def set_token(tokenizer, encoder: torch.nn.Module, token: str, vectors: torch.Tensor) -> tuple[AddedToken, torch.Tensor | None]:
    """``token`` with ``vectors`` as its rows: added as :func:`add_token` does, or, when ``token`` was added before
    with as many vectors, its rows replaced. Returns the token and the rows it replaced (None when added)."""
    names = token_names(token, vectors.shape[0])
    added_before = set(tokenizer.get_added_vocab())
    if names[0] not in added_before:
        return add_token(tokenizer, encoder, token, vectors), None
    if [name for name in names if name in added_before] != names or f"{token}_{len(names)}" in added_before:
        raise ModelLoadError(
            f"token {token!r} is already in use with another number of vectors than this embedding's "
            f"{len(names)}; give the embedding another token"
        )
    ids = tokenizer.convert_tokens_to_ids(names)
    table = input_embeddings(encoder)
    with torch.no_grad():
        previous = table.weight[ids].detach().clone()
        table.weight[ids] = vectors.to(table.weight.device, table.weight.dtype)
    return AddedToken(token, list(ids)), previous


def _is_one_token(tokenizer, word: str) -> bool:
    """The word is a whole word of the vocabulary (``cat`` is ``cat</w>``) or a token added before."""
    return word in tokenizer.get_vocab() or len(tokenizer(word, add_special_tokens=False).input_ids) == 1


def _grow(encoder: torch.nn.Module, rows: int) -> None:
    """Extend the embedding table to ``rows``, copying the existing rows exactly (new rows are set by the caller)."""
    old = input_embeddings(encoder)
    if rows <= old.num_embeddings:
        return
    new = torch.nn.Embedding(rows, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = 0
    inner = getattr(encoder, "module", encoder)
    inner.set_input_embeddings(new)
    inner.config.vocab_size = rows


def word_vectors(tokenizer, encoder: torch.nn.Module, word: str, num_vectors: int) -> torch.Tensor:
    """``num_vectors`` rows initialised from ``word``: its tokens' embeddings in turn, repeated when it has fewer."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ModelLoadError(f"init_word {word!r} has no tokens; give a word such as 'circle'")
    weight = input_embeddings(encoder).weight.detach()
    return torch.stack([weight[ids[index % len(ids)]] for index in range(num_vectors)]).float()


def expand_tokens(tokenizer, texts: list[str]) -> list[str]:
    """Each multi-vector token's word written out as its ``n`` tokens (see the module docstring)."""
    expansions: dict[str, str] = getattr(tokenizer, _EXPANSIONS, {})
    if not expansions:
        return texts
    pattern = re.compile(r"(?<![\w])(" + "|".join(map(re.escape, expansions)) + r")(?![\w])")
    return [pattern.sub(lambda match: expansions[match.group(1)], text) for text in texts]
