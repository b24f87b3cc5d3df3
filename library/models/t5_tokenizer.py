"""A small T5 tokenizer (SentencePiece Unigram), built offline for tiny models.

FLUX.1's T5-XXL uses a 32,128-piece SentencePiece vocabulary that no installed package ships, and nothing is
downloaded here. Tiny models get a small Unigram vocabulary of the same kind instead, built with ``tokenizers``
from whole words of the CLIP vocabulary (which open_clip ships) and saved with the model, so the folder reloads
offline with transformers' ``T5TokenizerFast``. It is for tiny models only: a real T5 needs its own tokenizer
files (``tokenizer_2/`` of a diffusers folder), since ids must match the encoder's embedding rows.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from library.models.tokenizer import clip_vocab_and_merges

if TYPE_CHECKING:  # imported where used: transformers takes seconds to import
    from transformers import PreTrainedTokenizerBase

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2
WORD_COUNT = 2000  # whole words taken from the CLIP vocabulary, in its merge order (frequent first)
_SPACE = "\u2581"  # SentencePiece's word-start marker


@functools.lru_cache(maxsize=1)
def tiny_t5_pieces() -> tuple[tuple[str, float], ...]:
    """(piece, log-probability) in id order: the specials, then whole words (most frequent first), then single
    characters, so that a known word is one piece and anything else still spells out."""
    vocab, _ = clip_vocab_and_merges()
    chars = [chr(code) for code in range(ord("!"), ord("~") + 1)]
    words = []
    for token in vocab:  # insertion order = CLIP's id order: bytes, byte+</w>, merges by frequency
        word = token.removesuffix("</w>")
        if token.endswith("</w>") and word.isascii() and word.isalpha():
            words.append(word)
        if len(words) == WORD_COUNT:
            break
    pieces = [*(_SPACE + word for word in words), *(_SPACE + char for char in chars), *chars, _SPACE]
    scored = [(token, 0.0) for token in SPECIAL_TOKENS]
    scored += [(piece, -math.log(rank + 2)) for rank, piece in enumerate(dict.fromkeys(pieces))]
    return tuple(scored)


def build_tiny_t5_tokenizer(max_length: int) -> PreTrainedTokenizerBase:
    """A ``T5TokenizerFast`` over :func:`tiny_t5_pieces`, padding/truncating to ``max_length`` tokens."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import T5TokenizerFast

    tokenizer = Tokenizer(Unigram(list(tiny_t5_pieces()), unk_id=SPECIAL_TOKENS.index("<unk>")))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always")
    end_id = SPECIAL_TOKENS.index("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", end_id)]
    )
    return T5TokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=max_length,
    )
