"""The dataset report shared by ``preprocess doctor`` and the start of a training run.

Both describe a folder with the same :class:`FolderReport` and print it with the same table, so what the doctor
showed before training is what the trainer shows when it starts. They differ only in how they look at the images:
the doctor decodes every file, the trainer reuses the records it scanned from image headers (it decodes once,
later, in ``TrainingData.prepare``). So near-duplicates, which need pixels, are the doctor's alone, and a file whose
header reads but whose pixels do not is an image in the trainer's table until that decode stops the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from library.data.buckets import BucketParams, Size
from library.data.captions import tag_frequencies

_TABLE_HEADER = (
    "folder", "repeats", "images", "samples", "smallest", "largest", "below res", "no caption", "unreadable",
    "passed over", "class tokens",
)
_PASSED_OVER_NAMED = 10


@dataclass(frozen=True)
class SeenImage:
    """One readable image as the report counts it: ``caption`` is ``None`` without a caption file,
    ``unreadable_caption`` is the caption file and the reason it could not be read."""

    path: Path
    size: Size
    bucket: Size
    caption: str | None
    samples: int
    unreadable_caption: tuple[Path, str] | None = None
    no_mask: str | None = None  # masked loss: why this image has no mask ("" when it has one; None: masks unused)


@dataclass
class FolderReport:
    path: str
    repeats: int
    class_tokens: str
    images: int = 0
    samples: int = 0
    smallest: Size | None = None
    largest: Size | None = None
    below_resolution: int = 0
    below_resolution_images: list[str] = field(default_factory=list)  # the images counted in below_resolution
    buckets: dict[str, int] = field(default_factory=dict)
    missing_captions: list[str] = field(default_factory=list)
    empty_captions: list[str] = field(default_factory=list)
    unreadable_captions: list[dict[str, str]] = field(default_factory=list)
    unreadable_images: list[dict[str, str]] = field(default_factory=list)
    passed_over: list[dict[str, str]] = field(default_factory=list)
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    masks: int | None = None  # masked loss: images with a mask (None when masks are not in use)
    without_mask: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}


def folder_report(
    path: Path,
    repeats: int,
    class_tokens: str,
    images: Sequence[SeenImage],
    resolution: Size,
    top_tags: int = 10,
    unreadable_images: Iterable[tuple[Path, str]] = (),
    passed_over: Iterable[tuple[Path, str]] = (),
) -> FolderReport:
    """Count one folder: sizes against ``resolution``, buckets, captions and tags; unreadable images and the
    entries the scan passed over are ``(path, reason)`` pairs."""
    report = FolderReport(str(path), repeats, class_tokens, images=len(images))
    report.samples = sum(image.samples for image in images)
    report.unreadable_images = [{"path": str(bad), "reason": reason} for bad, reason in unreadable_images]
    report.passed_over = [{"path": str(entry), "reason": reason} for entry, reason in passed_over]
    area = resolution[0] * resolution[1]
    buckets: Counter[str] = Counter()
    captions: list[str] = []
    for image in images:
        buckets[_bucket_name(image.bucket)] += 1
        if image.size[0] * image.size[1] < area:
            report.below_resolution += 1
            report.below_resolution_images.append(str(image.path))
        if image.unreadable_caption is not None:
            caption_file, reason = image.unreadable_caption
            report.unreadable_captions.append({"path": str(caption_file), "reason": reason})
        elif image.caption is None:
            report.missing_captions.append(str(image.path))
        elif not image.caption:
            report.empty_captions.append(str(image.path))
        else:
            captions.append(image.caption)
    _count_masks(report, images)
    if images:
        report.smallest = min((image.size for image in images), key=lambda size: size[0] * size[1])
        report.largest = max((image.size for image in images), key=lambda size: size[0] * size[1])
    report.buckets = _sorted_buckets(buckets)
    report.top_tags = tag_frequencies(captions).most_common(top_tags)
    return report


def _count_masks(report: FolderReport, images: Sequence[SeenImage]) -> None:
    """Masked loss: how many images have a mask, and which lack one and why."""
    if not any(image.no_mask is not None for image in images):
        return
    report.without_mask = [{"path": str(image.path), "reason": image.no_mask} for image in images if image.no_mask]
    report.masks = len(images) - len(report.without_mask)


def bucket_totals(folders: Iterable[FolderReport]) -> dict[str, int]:
    """Images per bucket over ``folders``, smallest bucket first."""
    totals: Counter[str] = Counter()
    for folder in folders:
        totals.update(folder.buckets)
    return _sorted_buckets(totals)


def describe_bucketing(params: BucketParams) -> str:
    """How images become training sizes, in a few words."""
    if not params.enabled:
        width, height = params.fixed_size
        return f"no buckets: every image resized and cropped to {width}x{height}"
    if params.no_upscale:
        return f"buckets from image sizes (no upscale), steps {params.grid}"
    return f"buckets {params.min_reso}-{params.max_reso} px, steps {params.grid}"


def folder_lines(folders: Sequence[FolderReport]) -> list[str]:
    """The per-folder table, the bucket distribution, the entries each folder passed over (not images) and each
    folder's top tags (class tokens caption the images that have no caption)."""
    rows = [_TABLE_HEADER] + [
        (
            Path(folder.path).name,
            str(folder.repeats),
            str(folder.images),
            str(folder.samples),
            _size(folder.smallest),
            _size(folder.largest),
            str(folder.below_resolution),
            str(len(folder.missing_captions) + len(folder.empty_captions)),
            str(len(folder.unreadable_images) + len(folder.unreadable_captions)),
            str(len(folder.passed_over)),
            folder.class_tokens,
        )
        for folder in folders
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_TABLE_HEADER))]
    left = (0, len(_TABLE_HEADER) - 1)
    lines = [
        "  ".join(cell.ljust(widths[i]) if i in left else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    totals = bucket_totals(folders)
    lines.append("buckets (images): " + (", ".join(f"{name}: {count}" for name, count in totals.items()) or "none"))
    for folder in folders:
        if folder.passed_over:
            lines.append(_passed_over_line(folder))
    for folder in folders:
        if folder.masks is not None:
            lines.append(_masks_line(folder))
    for folder in folders:
        if folder.top_tags:
            tags = ", ".join(f"{tag} ({count})" for tag, count in folder.top_tags)
            lines.append(f"top tags in {Path(folder.path).name}: {tags}")
    return lines


def _passed_over_line(folder: FolderReport) -> str:
    """The entries of a folder the scan passed over, by name, each with the reason."""
    shown = folder.passed_over[:_PASSED_OVER_NAMED]
    named = ", ".join(f"{Path(entry['path']).name} ({entry['reason']})" for entry in shown)
    more = len(folder.passed_over) - len(shown)
    return f"passed over in {Path(folder.path).name}: {named}" + (f" and {more} more" if more > 0 else "")


def _masks_line(folder: FolderReport) -> str:
    """Masked loss: a folder's images with a mask, and the first of those without one, each with the reason."""
    line = f"masks in {Path(folder.path).name}: {folder.masks} of {folder.images} image(s)"
    if not folder.without_mask:
        return line
    shown = folder.without_mask[:_PASSED_OVER_NAMED]
    named = ", ".join(f"{Path(entry['path']).name} ({entry['reason']})" for entry in shown)
    more = len(folder.without_mask) - len(shown)
    return f"{line}; without: {named}" + (f" and {more} more" if more > 0 else "")


def _bucket_name(bucket: Size) -> str:
    return f"{bucket[0]}x{bucket[1]}"


def _sorted_buckets(counts: Counter[str]) -> dict[str, int]:
    def size_key(name: str) -> tuple[int, int]:
        width, height = name.split("x")
        return int(width), int(height)

    return dict(sorted(counts.items(), key=lambda item: size_key(item[0])))


def _size(size: Size | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "-"
