"""What the training data looks like, for people (the doctor's table at the start of a run) and for the files a
run writes (plain values; ``library.networks.metadata`` turns them into ``ss_*`` keys).

The values have the shapes sd-scripts records, so A1111, Civitai and other readers show them: image counts are
images times repeats, ``dataset_dirs`` maps each folder name to ``{"n_repeats", "img_count"}``, ``tag_frequency``
maps it to ``{tag: count}``, and ``bucket_info`` lists the buckets with their sample counts (repeats included).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from library.data.buckets import BucketParams
from library.data.captions import tag_frequencies
from library.data.dataset_config import DatasetBlueprint, SubsetBlueprint
from library.data.dataset_report import FolderReport, SeenImage, describe_bucketing, folder_lines, folder_report
from library.data.images import ImageLoadError
from library.data.masks import header_has_alpha
from library.data.records import ImageRecord


def _bucket_counts(
    records: Sequence[ImageRecord], repeats: Sequence[int]
) -> dict[tuple[int, int], tuple[int, int]]:
    """Bucket (width, height) -> (images, samples per epoch) of training ``records`` seen ``repeats`` times each,
    sorted by size."""
    images: Counter[tuple[int, int]] = Counter()
    samples: Counter[tuple[int, int]] = Counter()
    for record, count in zip(records, repeats):
        images[record.plan.bucket] += 1
        samples[record.plan.bucket] += count
    return {bucket: (images[bucket], samples[bucket]) for bucket in sorted(images)}


def folder_reports(
    datasets: Sequence[DatasetBlueprint],
    train_records: Sequence[ImageRecord],
    repeats: Sequence[int],
    validation_records: Sequence[ImageRecord],
    unreadable: Mapping[SubsetBlueprint, Sequence[ImageLoadError]],
    passed_over: Mapping[SubsetBlueprint, Sequence[tuple[Path, str]]],
    top_tags: int = 10,
) -> dict[SubsetBlueprint, FolderReport]:
    """The doctor's folder report of every subset of ``datasets``, from the scanned records (nothing decoded):
    training records seen ``repeats`` times each, the images whose header could not be read, and the entries the
    scan passed over (``(path, reason)``).

    Images held out for validation count as images of their folder but add no samples; a caption file that is
    missing or empty counts as missing (records do not tell the two apart).
    """
    seen: dict[SubsetBlueprint, list[SeenImage]] = defaultdict(list)
    sampled = list(zip(train_records, repeats)) + [(record, 0) for record in validation_records]
    for record, count in sampled:
        caption = record.caption if record.has_caption else None
        no_mask = _no_mask_reason(record)
        image = SeenImage(record.path, record.size, record.plan.bucket, caption, count, no_mask=no_mask)
        seen[record.subset].append(image)
    return {
        subset: folder_report(
            subset.image_dir,
            subset.num_repeats,
            subset.class_tokens or "",
            seen[subset],
            dataset.resolution,
            top_tags,
            [(error.path, error.reason) for error in unreadable.get(subset, [])],
            passed_over.get(subset, ()),
        )
        for dataset in datasets
        for subset in dataset.subsets
    }


def _no_mask_reason(record: ImageRecord) -> str | None:
    """Masked loss: why ``record`` has no mask ("" when it has one; None when its folder is not masked). A mask
    folder's images all have one (the scan refuses a missing one); an alpha-masked image may have no alpha."""
    if not record.subset.masked:
        return None
    if record.mask_path is not None:
        return ""
    try:
        return "" if header_has_alpha(record.path) else "no alpha channel: weighs 1 everywhere"
    except ImageLoadError as error:
        return error.reason


def summary_lines(
    datasets: Sequence[DatasetBlueprint],
    params: Sequence[BucketParams],
    reports: Mapping[SubsetBlueprint, FolderReport],
    *,
    validation_images: int,
    samples_per_epoch: int,
    batches_per_epoch: int,
    num_processes: int,
) -> list[str]:
    """The start-of-run report: per dataset (``params`` are their bucket settings) the doctor's folder table
    (``reports``, from :func:`folder_reports`), bucket distribution and top tags, regularization folders in a table
    of their own; then the totals (``batches_per_epoch`` counts one process's batches)."""
    lines = []
    for index, dataset in enumerate(datasets):
        width, height = dataset.resolution
        lines.append(
            f"dataset {index}: {width}x{height}, batch size {dataset.batch_size}, {describe_bucketing(params[index])}"
        )
        lines += folder_lines([reports[subset] for subset in dataset.subsets if not subset.is_reg])
        regularization = [reports[subset] for subset in dataset.subsets if subset.is_reg]
        if regularization:
            lines += ["regularization folders:", *folder_lines(regularization)]
    lines.append("near-duplicates: not checked at start (python -m preprocess doctor DIR finds them)")
    lines.append(f"validation: {validation_images} image(s)" if validation_images else "validation: none")
    lines.append(
        f"total: {samples_per_epoch} samples per epoch, {batches_per_epoch} batches per epoch"
        + (f" per process ({num_processes} processes)" if num_processes > 1 else "")
    )
    return lines


def _unique_names(subsets: Sequence[SubsetBlueprint]) -> dict[SubsetBlueprint, str]:
    """Folder names as sd-scripts keys them (never full paths: the metadata travels with shared files);
    a name used again gets " (2)", " (3)"…"""
    names: dict[SubsetBlueprint, str] = {}
    seen: Counter[str] = Counter()
    for subset in subsets:
        base = Path(subset.image_dir).name
        seen[base] += 1
        names[subset] = base if seen[base] == 1 else f"{base} ({seen[base]})"
    return names


def image_count(records: Sequence[ImageRecord], reg: bool) -> int:
    """sd-scripts' ``num_train_images`` / ``num_reg_images``: images times their folder's repeats."""
    return sum(record.subset.num_repeats for record in records if record.is_reg == reg)


def dataset_dirs(
    subsets: Sequence[SubsetBlueprint], records: Sequence[ImageRecord], reg: bool
) -> dict[str, dict[str, int]]:
    """``{folder name: {"n_repeats", "img_count"}}`` of the training (or regularization) folders among ``subsets``
    (all of a run's, in order: names are made unique over them), counting ``records``."""
    names, per_subset = _unique_names(subsets), Counter(record.subset for record in records)
    return {
        names[subset]: {"n_repeats": subset.num_repeats, "img_count": per_subset[subset]}
        for subset in subsets
        if subset.is_reg == reg
    }


def tag_frequency(subsets: Sequence[SubsetBlueprint], records: Sequence[ImageRecord]) -> dict[str, dict[str, int]]:
    """``{folder name: {tag: captions containing it}}`` over the captions of ``records``."""
    names = _unique_names(subsets)
    captions: dict[str, list[str]] = defaultdict(list)
    for record in records:
        captions[names[record.subset]].append(record.caption)
    return {name: dict(tag_frequencies(texts)) for name, texts in captions.items()}


def bucket_info(records: Sequence[ImageRecord], repeats: Sequence[int]) -> dict[str, object]:
    """sd-scripts' bucket record: each bucket's resolution and samples per epoch, and the mean aspect error."""
    buckets = {
        str(index): {"resolution": [width, height], "count": samples}
        for index, ((width, height), (_, samples)) in enumerate(_bucket_counts(records, repeats).items())
    }
    return {"buckets": buckets, "mean_img_ar_error": _mean_aspect_error(records)}


def _mean_aspect_error(records: Sequence[ImageRecord]) -> float:
    """Mean |bucket aspect - image aspect| over images (not repeats), as sd-scripts reports it."""
    errors = [
        abs(record.plan.bucket[0] / record.plan.bucket[1] - record.size[0] / record.size[1]) for record in records
    ]
    return sum(errors) / len(errors) if errors else 0.0
