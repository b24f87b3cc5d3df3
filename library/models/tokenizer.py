"""The CLIP tokenizer, built offline from the BPE vocabulary that open_clip_torch ships.

Stable Diffusion's text encoders all use OpenAI's CLIP byte-pair vocabulary (49,408 tokens). No hub download is
possible here, so the vocabulary and merge list are rebuilt from ``bpe_simple_vocab_16e6.txt.gz`` inside the
installed ``open_clip`` package. The ids equal open_clip's own tokenizer (tested).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: transformers takes seconds, and importing a family record needs only names
    from transformers import CLIPTokenizer

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# The BPE file lists more merges than CLIP uses; CLIP keeps the first 48,894 (49,152 - 256 - 2).
NUM_MERGES = 49152 - 256 - 2
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
MAX_LENGTH = 77


def bpe_vocab_path() -> Path:
    """Locate open_clip's BPE file without importing open_clip (its __init__ imports torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "open_clip_torch is not installed; it provides the CLIP vocabulary. "
            "Install it with: pip install --no-deps open_clip_torch==3.3.0"
        )
    path = Path(spec.submodule_search_locations[0]) / BPE_FILE_NAME
    if not path.is_file():
        raise RuntimeError(f"CLIP vocabulary not found at {path}; reinstall open_clip_torch")
    return path


def _byte_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table, in CLIP's order (printable bytes first)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (token -> id, merge list) exactly as CLIP's tokenizer orders them."""
    lines = gzip.open(bpe_vocab_path(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    byte_chars = list(_byte_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(merge) for merge in merges]
    tokens += [START_TOKEN, END_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def build_clip_tokenizer(pad_token: str = END_TOKEN, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP tokenizer; SD1 and CLIP-L pad with the end token, OpenCLIP (SD2, SDXL's second encoder) with ``!``."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        pad_token=pad_token,
        model_max_length=max_length,
    )
