"""The offline CLIP tokenizer gives exactly open_clip's ids."""

from __future__ import annotations

import importlib.util

import pytest

from library.models.tokenizer import bpe_vocab_path, build_clip_tokenizer

CAPTIONS = [
    "a photo of sks dog",
    "frnc, red circle, blue background",
    "(masterpiece:1.2), 1girl, [blue hair], ((smile)), <lora:style:0.8>",
    "日本語のテキスト、猫耳 🐶🎉 café naïve Ünïcödé ÀÉÎ",
    "Hello   WORLD!!  multiple   spaces\tand\nnewlines",
    "score_9, score_8_up, rating:safe, ^_^ , :3",
    "a very long caption " * 20,
]


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    """open_clip's own SimpleTokenizer, imported by file path (its package __init__ needs torchvision)."""
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", bpe_vocab_path().parent / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


@pytest.mark.parametrize("caption", CAPTIONS)
def test_ids_match_open_clip(open_clip_tokenizer, caption):
    ours = build_clip_tokenizer()(caption, truncation=False).input_ids
    reference = [49406, *open_clip_tokenizer.encode(caption), 49407]
    assert ours == reference


def test_vocabulary_size_and_special_tokens():
    tokenizer = build_clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer.bos_token_id == 49406
    assert tokenizer.eos_token_id == 49407


@pytest.mark.parametrize("pad_token, pad_id", [("<|endoftext|>", 49407), ("!", 0)])
def test_padding_token_per_family(pad_token, pad_id):
    tokenizer = build_clip_tokenizer(pad_token=pad_token)
    ids = tokenizer("frnc", padding="max_length", max_length=77, truncation=True).input_ids
    unpadded = tokenizer("frnc").input_ids
    assert len(ids) == 77
    assert ids[: len(unpadded)] == unpadded
    assert ids[len(unpadded) :] == [pad_id] * (77 - len(unpadded))
    assert tokenizer.pad_token_id == pad_id
