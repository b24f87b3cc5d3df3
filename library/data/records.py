"""Scanning subsets into image records: sizes from file headers, captions, bucket plans.

Scanning must stay cheap (10,000 images in a few seconds), so it reads only image headers; the full decode that
proves every image is usable happens once in ``TrainingData.prepare``, before training starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from library.data.buckets import BucketAssigner, ResizePlan, Size
from library.data.captions import CaptionError, read_caption_for
from library.data.dataset_config import SubsetBlueprint
from library.data.images import ImageLoadError, describe_unreadable, list_folder, read_image_size
from library.data.masks import MaskError, find_mask, mask_index

logger = logging.getLogger(__name__)


class DatasetError(Exception):
    """A dataset that cannot train (unreadable image or caption, no images...); one line per problem, no traceback.
    The config is valid: the files it points at are not (a failure, not a config error)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


@dataclass(frozen=True)
class ImageRecord:
    """One training image: where it is, its upright size, its caption and how it becomes a sample.

    ``caption`` is the caption file's text, or the subset's class tokens when the file is missing or empty
    (``has_caption`` tells which), or ``""`` when there are neither. ``mask_path`` is its file in the subset's
    mask folder (masked loss).
    """

    path: Path
    size: Size
    caption: str
    has_caption: bool
    subset: SubsetBlueprint
    dataset_index: int
    plan: ResizePlan
    mask_path: Path | None = None

    @property
    def is_reg(self) -> bool:
        return self.subset.is_reg


@dataclass
class SubsetScan:
    """What scanning one subset found."""

    subset: SubsetBlueprint
    records: list[ImageRecord]
    missing_captions: int
    bad_images: list[ImageLoadError]
    passed_over: list[tuple[Path, str]]


def scan_subset(subset: SubsetBlueprint, dataset_index: int, assigner: BucketAssigner) -> SubsetScan:
    """Records for every readable image of ``subset``; unreadable ones and the entries passed over are returned,
    not raised."""
    records: list[ImageRecord] = []
    bad: list[ImageLoadError] = []
    missing = 0
    fallback = subset.class_tokens or ""
    listing = list_folder(subset.image_dir, subset.caption_extension)
    masks = mask_index(subset.mask_dir) if subset.mask_dir is not None else None
    no_mask: list[Path] = []
    for path in listing.images:
        try:
            size = read_image_size(path)
        except ImageLoadError as error:
            bad.append(error)
            continue
        try:
            caption = read_caption_for(path, subset.caption_extension)
        except CaptionError as error:
            raise DatasetError([f"{error}"]) from None
        if not caption:
            missing += 1
        plan = assigner.plan(size)
        mask_path = _mask_of(masks, path, no_mask)
        text = caption or fallback
        records.append(ImageRecord(path, size, text, bool(caption), subset, dataset_index, plan, mask_path))
    if no_mask:
        raise DatasetError([_missing_masks_line(subset, no_mask)])
    return SubsetScan(subset, records, missing, bad, listing.passed_over)


def _mask_of(masks: dict[str, list[Path]] | None, image: Path, no_mask: list[Path]) -> Path | None:
    """``image``'s mask file when its subset has a mask folder; an image without one joins ``no_mask``."""
    if masks is None:
        return None
    try:
        found = find_mask(masks, image)
    except MaskError as error:
        raise DatasetError([str(error)]) from None
    if found is None:
        no_mask.append(image)
    return found


def _missing_masks_line(subset: SubsetBlueprint, images: list[Path], limit: int = 10) -> str:
    """Masked loss with a mask folder needs a mask for every image: one line naming the images without one."""
    named = ", ".join(path.name for path in images[:limit])
    more = f" and {len(images) - limit} more" if len(images) > limit else ""
    return (
        f"{subset.image_dir}: {len(images)} image(s) have no mask in {subset.mask_dir}: {named}{more}; add a mask "
        "with the same file name stem (white = learn, black = ignore), or turn off dataset.masked_loss"
    )


def report_missing_captions(scan: SubsetScan) -> None:
    """One line per subset, not one per image."""
    if not scan.missing_captions:
        return
    subset = scan.subset
    if subset.class_tokens:
        logger.info(
            "%s: %d of %d image(s) have no %s caption: training them on the class tokens '%s'",
            subset.image_dir, scan.missing_captions, len(scan.records), subset.caption_extension, subset.class_tokens,
        )
    else:
        logger.warning(
            "%s: %d of %d image(s) have no %s caption and the folder has no class tokens: they train on an empty "
            "caption (write captions, or name the folder like '10_sks dog')",
            subset.image_dir, scan.missing_captions, len(scan.records), subset.caption_extension,
        )


def handle_bad_images(errors: list[ImageLoadError], policy: str) -> None:
    """``error``: stop with one line naming the bad files; ``skip``: one warning per file (they are left out)."""
    if not errors:
        return
    if policy == "skip":
        for error in errors:
            logger.warning("skipping unreadable image %s", error)
        return
    hint = "fix or remove them, or set dataset.on_bad_image = 'skip' to train without them"
    raise DatasetError([f"{describe_unreadable(errors)}; {hint}"])


def scan_subsets(
    subsets: list[tuple[SubsetBlueprint, int]],
    assigners: Sequence[BucketAssigner],
    on_bad_image: str,
) -> list[SubsetScan]:
    """Scan ``(subset, dataset_index)`` pairs with their dataset's assigner; bad images handled per
    ``on_bad_image``; empty subsets warned about."""
    scans = [scan_subset(subset, index, assigners[index]) for subset, index in subsets]
    handle_bad_images([error for scan in scans for error in scan.bad_images], on_bad_image)
    for scan in scans:
        if not scan.records:
            logger.warning("%s: no usable images in this folder; it is left out", scan.subset.image_dir)
        report_missing_captions(scan)
    return scans
