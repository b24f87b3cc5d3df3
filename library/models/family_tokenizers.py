"""The tokenizer of each text encoder: the model's own files when present, else a built-in one that fits.

CLIP's vocabulary is built in (``tokenizer.py``: the real 49,408-token BPE). T5's is not: the built-in Unigram
vocabulary (``t5_tokenizer.py``) fits only the tiny models built with it, so a T5 encoder with another vocabulary
size needs its own tokenizer files, and is refused with a line saying where to put them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from library.models.errors import ModelLoadError
from library.models.families import TextEncoderSpec
from library.models.t5_tokenizer import build_tiny_t5_tokenizer
from library.models.tokenizer import build_clip_tokenizer

logger = logging.getLogger(__name__)


def tokenizer_folder_name(spec: TextEncoderSpec) -> str:
    """The diffusers sub-folder of an encoder's tokenizer: ``text_encoder_2`` -> ``tokenizer_2``."""
    return spec.component.replace("text_encoder", "tokenizer")


def load_tokenizer(spec: TextEncoderSpec, encoder: torch.nn.Module, folder: Path | None):
    """The tokenizer in ``folder`` (a diffusers model folder, or None) for ``spec``, else the built-in one."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    tokenizer_dir = None if folder is None else folder / tokenizer_folder_name(spec)
    if tokenizer_dir is not None and tokenizer_dir.is_dir():
        tokenizer_class = T5TokenizerFast if spec.tokenizer == "t5" else CLIPTokenizer
        return tokenizer_class.from_pretrained(tokenizer_dir, local_files_only=True, model_max_length=spec.max_length)
    if spec.tokenizer == "clip":
        if tokenizer_dir is not None:
            logger.info("%s not found; using the built-in CLIP vocabulary", tokenizer_dir)
        return build_clip_tokenizer(pad_token=spec.pad_token)
    tokenizer = build_tiny_t5_tokenizer(spec.max_length)
    if encoder.config.vocab_size != len(tokenizer):
        where = tokenizer_dir or "model.config_dir's tokenizer_2/ (a diffusers folder of this family)"
        raise ModelLoadError(
            f"{spec.component}: the T5 tokenizer is not built in (only a tiny model's is); put the model's T5 "
            f"tokenizer files (tokenizer.json or spiece.model) in {where}"
        )
    return tokenizer
