"""What the training data looks like, for people (the start-of-run table) and for the LoRA file (``ss_*``).

The metadata keys and shapes are the ones sd-scripts writes, so A1111, Civitai and other readers show them:
``ss_num_train_images`` counts training images times repeats, ``ss_dataset_dirs`` maps each folder name to
``{"n_repeats", "img_count"}``, ``ss_tag_frequency`` maps it to ``{tag: count}``, and ``ss_bucket_info`` lists the
buckets with their sample counts (repeats included).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from library.data.captions import tag_frequencies
from library.data.dataset_config import DatasetBlueprint, SubsetBlueprint

if TYPE_CHECKING:
    from library.data.pipeline import TrainingData


def _bucketing(dataset: DatasetBlueprint) -> str:
    width, height = dataset.resolution
    if not dataset.enable_bucket:
        return f"no buckets: every image resized and cropped to {width}x{height}"
    if dataset.bucket_no_upscale:
        return f"buckets from image sizes (no upscale), steps {dataset.bucket_reso_steps}"
    return f"buckets {dataset.min_bucket_reso}-{dataset.max_bucket_reso} px, steps {dataset.bucket_reso_steps}"


def _subset_rows(data: TrainingData) -> dict[SubsetBlueprint, tuple[int, int, int]]:
    """Per subset: (images, samples per epoch, images without a caption file)."""
    rows: dict[SubsetBlueprint, list[int]] = defaultdict(lambda: [0, 0, 0])
    for record, repeats in zip(data.train_records, data.repeats):
        row = rows[record.subset]
        row[0] += 1
        row[1] += repeats
        row[2] += not record.has_caption
    return {subset: (row[0], row[1], row[2]) for subset, row in rows.items()}


def bucket_counts(data: TrainingData) -> dict[tuple[int, int], tuple[int, int]]:
    """Bucket (width, height) -> (images, samples per epoch), over all datasets, sorted by size."""
    images: Counter[tuple[int, int]] = Counter()
    samples: Counter[tuple[int, int]] = Counter()
    for record, repeats in zip(data.train_records, data.repeats):
        images[record.plan.bucket] += 1
        samples[record.plan.bucket] += repeats
    return {bucket: (images[bucket], samples[bucket]) for bucket in sorted(images)}


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) if i in (0, 5) else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def summary_lines(data: TrainingData) -> list[str]:
    """Folders, repeats, image counts and the bucket table, printed when a run starts."""
    per_subset = _subset_rows(data)
    lines = []
    for index, dataset in enumerate(data.datasets):
        width, height = dataset.resolution
        lines.append(f"dataset {index}: {width}x{height}, batch size {dataset.batch_size}, {_bucketing(dataset)}")
        rows = [("folder", "repeats", "images", "samples", "no caption", "class tokens / kind")]
        for subset in dataset.subsets:
            count, samples, uncaptioned = per_subset.get(subset, (0, 0, 0))
            kind = "regularization" if subset.is_reg else "training"
            tokens = f"{subset.class_tokens} ({kind})" if subset.class_tokens else kind
            numbers = (subset.num_repeats, count, samples, uncaptioned)
            rows.append((str(subset.image_dir), *map(str, numbers), tokens))
        lines += _table(rows)
    buckets = bucket_counts(data)
    lines.append("buckets (images / samples per epoch): " + ", ".join(
        f"{w}x{h}: {count} / {samples}" for (w, h), (count, samples) in buckets.items()
    ))
    held = len(data.validation_records)
    lines.append(f"validation: {held} image(s)" if held else "validation: none")
    lines.append(
        f"total: {data.samples_per_epoch} samples per epoch, {data.steps_per_epoch} batches per epoch"
        + (f" per process ({data.num_processes} processes)" if data.num_processes > 1 else "")
    )
    return lines


def _unique_names(subsets: list[SubsetBlueprint]) -> dict[SubsetBlueprint, str]:
    """Folder names as sd-scripts keys them (never full paths: the metadata travels with shared files);
    a name used again gets " (2)", " (3)"…"""
    names: dict[SubsetBlueprint, str] = {}
    seen: Counter[str] = Counter()
    for subset in subsets:
        base = Path(subset.image_dir).name
        seen[base] += 1
        names[subset] = base if seen[base] == 1 else f"{base} ({seen[base]})"
    return names


def _all_subsets(data: TrainingData) -> list[SubsetBlueprint]:
    return [subset for dataset in data.datasets for subset in dataset.subsets]


def image_count(data: TrainingData, reg: bool) -> int:
    """sd-scripts' ``num_train_images`` / ``num_reg_images``: images times their folder's repeats."""
    return sum(record.subset.num_repeats for record in data.train_records if record.is_reg == reg)


def dataset_dirs(data: TrainingData, reg: bool) -> dict[str, dict[str, int]]:
    """``{folder name: {"n_repeats", "img_count"}}`` of the training (or regularization) folders."""
    subsets = _all_subsets(data)
    names, per_subset = _unique_names(subsets), _subset_rows(data)
    return {
        names[subset]: {"n_repeats": subset.num_repeats, "img_count": per_subset.get(subset, (0, 0, 0))[0]}
        for subset in subsets
        if subset.is_reg == reg
    }


def tag_frequency(data: TrainingData) -> dict[str, dict[str, int]]:
    """``{folder name: {tag: captions containing it}}`` over the captions training uses."""
    names = _unique_names(_all_subsets(data))
    captions: dict[str, list[str]] = defaultdict(list)
    for record in data.train_records:
        captions[names[record.subset]].append(record.caption)
    return {name: dict(tag_frequencies(texts)) for name, texts in captions.items()}


def bucket_info(data: TrainingData) -> dict[str, object]:
    """sd-scripts' bucket record: each bucket's resolution and samples per epoch, and the mean aspect error."""
    buckets = {
        str(index): {"resolution": [width, height], "count": samples}
        for index, ((width, height), (_, samples)) in enumerate(bucket_counts(data).items())
    }
    return {"buckets": buckets, "mean_img_ar_error": _mean_aspect_error(data)}


def training_metadata(data: TrainingData) -> dict[str, str]:
    """The dataset part of the ``ss_*`` metadata of a trained file (all values strings)."""
    first = data.datasets[0]
    first_subset = next(subset for subset in first.subsets if not subset.is_reg)
    return {
        "ss_num_train_images": str(image_count(data, reg=False)),
        "ss_num_reg_images": str(image_count(data, reg=True)),
        "ss_num_batches_per_epoch": str(data.steps_per_epoch),
        "ss_batch_size_per_device": str(first.batch_size),
        "ss_resolution": str(first.resolution),
        "ss_enable_bucket": str(first.enable_bucket),
        "ss_min_bucket_reso": str(first.min_bucket_reso),
        "ss_max_bucket_reso": str(first.max_bucket_reso),
        "ss_bucket_no_upscale": str(first.bucket_no_upscale),
        "ss_dataset_dirs": json.dumps(dataset_dirs(data, reg=False)),
        "ss_reg_dataset_dirs": json.dumps(dataset_dirs(data, reg=True)),
        "ss_tag_frequency": json.dumps(tag_frequency(data)),
        "ss_bucket_info": json.dumps(bucket_info(data)),
        "ss_keep_tokens": str(first_subset.keep_tokens),
        "ss_shuffle_caption": str(first_subset.shuffle_caption),
        "ss_caption_dropout_rate": str(first_subset.caption_dropout_rate),
        "ss_caption_dropout_every_n_epochs": str(first_subset.caption_dropout_every_n_epochs),
        "ss_caption_tag_dropout_rate": str(first_subset.caption_tag_dropout_rate),
        "ss_flip_aug": str(first_subset.flip_aug),
        "ss_color_aug": str(first_subset.color_aug),
        "ss_random_crop": str(first_subset.random_crop),
        "ss_prior_loss_weight": str(data.config.dataset.prior_loss_weight),
        "ss_cache_latents": str(data.config.dataset.cache_latents),
    }


def _mean_aspect_error(data: TrainingData) -> float:
    """Mean |bucket aspect - image aspect| over images (not repeats), as sd-scripts reports it."""
    errors = [
        abs(record.plan.bucket[0] / record.plan.bucket[1] - record.size[0] / record.size[1])
        for record in data.train_records
    ]
    return sum(errors) / len(errors) if errors else 0.0
