"""The loop ``tag`` and ``caption`` share: batch images through a model, write their captions.

The model is just a function from a batch of RGB images to one caption each, so any tagger
or captioner plugs in. Existing captions are skipped, overwritten or appended to.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from library.data.captions import CaptionError, caption_path, join_tags, read_caption_for, split_tags
from library.data.images import ImageLoadError, load_image_rgb
from preprocess.common import Destination, Summary, positive_int

Labeller = Callable[[list[Image.Image]], list[str]]
EXISTING_MODES = ("skip", "overwrite", "append")


def add_labelling_arguments(parser: argparse.ArgumentParser, default_batch: int) -> None:
    parser.add_argument(
        "--existing",
        choices=EXISTING_MODES,
        default="skip",
        help="what to do with images that already have a caption (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=default_batch, help="images per model call (default: %(default)s)"
    )


def combine(existing: str | None, new: str, mode: str) -> str:
    """The caption to write: ``new``, or with ``append`` the existing pieces followed by new ones
    not already present."""
    if mode != "append" or not existing:
        return new
    pieces = split_tags(existing)
    return join_tags(pieces + [piece for piece in split_tags(new) if piece not in pieces])


def label_images(
    images: Sequence[Path],
    destination: Destination,
    extension: str,
    existing_mode: str,
    batch_size: int,
    labeller: Labeller,
    summary: Summary,
) -> list[str]:
    """Caption ``images`` with ``labeller``, write the results, return the new labels (in order)."""
    pending: list[tuple[Path, str | None]] = []
    for path in images:
        try:
            existing = read_caption_for(path, extension)
        except CaptionError as error:
            summary.problem(error.path, error.reason)
            continue
        if existing is not None and existing_mode == "skip":
            destination.copy_image_with_caption(path, extension)
            summary.add("skipped (caption exists)")
        else:
            pending.append((path, existing))
    labels: list[str] = []
    progress = tqdm(total=len(pending), desc=summary.title, unit="img", disable=None)
    for batch in _loaded_batches(pending, batch_size, summary):
        produced = labeller([image for _, _, image in batch])
        for (path, existing, _), label in zip(batch, produced, strict=True):
            destination.copy_file(path, destination.path_for(path))
            destination.write_text(
                destination.path_for(caption_path(path, extension)), combine(existing, label, existing_mode)
            )
            summary.add("captions written")
            labels.append(label)
        progress.update(len(batch))
    progress.close()
    return labels


def _loaded_batches(
    pending: list[tuple[Path, str | None]], batch_size: int, summary: Summary
) -> Iterator[list[tuple[Path, str | None, Image.Image]]]:
    """Batches of decoded images; unreadable files are reported and left out."""
    batch: list[tuple[Path, str | None, Image.Image]] = []
    for path, existing in pending:
        try:
            batch.append((path, existing, load_image_rgb(path)))
        except ImageLoadError as error:
            summary.problem(error.path, error.reason)
            continue
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
