"""Per-step caption processing, with sd-scripts semantics so existing datasets train the same way.

Order: prefix/suffix are added (joined with a space), then the whole caption may be dropped
(``caption_dropout_rate``, or every ``caption_dropout_every_n_epochs``-th epoch), then tags after the kept
ones are shuffled and individually dropped (``caption_tag_dropout_rate``). Kept tags are the first
``keep_tokens`` tags, or, when the caption contains ``keep_tokens_separator``, the tags before it (and the tags
after a second separator, which stay at the end). The separator itself never reaches the text encoder.

Randomness comes only from the ``random.Random`` passed in, so a batch can be rebuilt exactly on resume;
``rng=None`` gives the fixed caption (validation, text-encoder cache).
"""

from __future__ import annotations

import random

from library.data.captions import join_tags, split_tags
from library.data.dataset_config import SubsetBlueprint


def with_prefix_suffix(caption: str, subset: SubsetBlueprint) -> str:
    """``prefix caption suffix``, space-joined as sd-scripts does."""
    if subset.caption_prefix:
        caption = f"{subset.caption_prefix} {caption}"
    if subset.caption_suffix:
        caption = f"{caption} {subset.caption_suffix}"
    return caption


def split_kept_tags(caption: str, subset: SubsetBlueprint) -> tuple[list[str], list[str], list[str]]:
    """(kept leading tags, free tags, kept trailing tags) of a caption."""
    separator = subset.keep_tokens_separator
    if separator and separator in caption:
        head, rest = caption.split(separator, 1)
        middle, _, tail = rest.partition(separator)
        return split_tags(head), split_tags(middle), split_tags(tail)
    tags = split_tags(caption)
    return tags[: subset.keep_tokens], tags[subset.keep_tokens :], []


def drops_whole_caption(subset: SubsetBlueprint, epoch: int, rng: random.Random) -> bool:
    """Caption dropout; ``epoch`` counts from 0, so every n-th epoch is ``epoch + 1`` divisible by n."""
    dropped = subset.caption_dropout_rate > 0 and rng.random() < subset.caption_dropout_rate
    every = subset.caption_dropout_every_n_epochs
    return dropped or (every > 0 and (epoch + 1) % every == 0)


def process_caption(caption: str, subset: SubsetBlueprint, rng: random.Random | None = None, epoch: int = 0) -> str:
    """The caption one training step sees (see module docstring)."""
    caption = with_prefix_suffix(caption, subset)
    if rng is not None and drops_whole_caption(subset, epoch, rng):
        return ""
    randomised = rng is not None and (subset.shuffle_caption or subset.caption_tag_dropout_rate > 0)
    has_separator = bool(subset.keep_tokens_separator) and subset.keep_tokens_separator in caption
    if not (randomised or has_separator):
        return caption
    head, middle, tail = split_kept_tags(caption, subset)
    if rng is not None and subset.shuffle_caption:
        rng.shuffle(middle)
    if rng is not None and subset.caption_tag_dropout_rate > 0:
        middle = [tag for tag in middle if rng.random() >= subset.caption_tag_dropout_rate]
    return join_tags(head + middle + tail)
