"""The dataset pre-flight report behind ``doctor`` (and printed by the trainer at start).

For each image folder: repeats and class tokens from the ``N_name`` folder convention, image
count, sizes and how many are below the training resolution, the bucket distribution the
training settings produce, missing / empty / unreadable captions, unreadable images and the
top tags; across folders: near-duplicate images. Problems are graded: an ``error`` blocks
training, a ``warning`` is worth a look.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from library.data.buckets import BucketAssigner, BucketParams, Size
from library.data.captions import DEFAULT_CAPTION_EXTENSION, CaptionError, read_caption_for, tag_frequencies
from library.data.images import ImageLoadError, list_images, load_image_rgb
from preprocess.duplicates import DEFAULT_MAX_DISTANCE, Fingerprint, fingerprint, near_duplicate_groups

_REPEAT_FOLDER = re.compile(r"^(\d+)_(.*)$")
ERROR, WARNING = "error", "warning"


def parse_repeat_folder(name: str) -> tuple[int, str] | None:
    """``"10_sks dog"`` -> ``(10, "sks dog")``; ``None`` for a name without the ``N_`` prefix."""
    match = _REPEAT_FOLDER.match(name)
    return (int(match.group(1)), match.group(2).strip()) if match else None


def find_image_folders(root: Path) -> list[Path]:
    """``root`` if it holds images itself, then each direct sub-folder that holds images."""
    folders = [root] if list_images(root) else []
    subfolders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    return folders + [path for path in subfolders if list_images(path)]


@dataclass
class Problem:
    severity: str
    folder: str
    message: str


@dataclass
class FolderReport:
    path: str
    repeats: int
    class_tokens: str
    images: int = 0
    smallest: Size | None = None
    largest: Size | None = None
    below_resolution: int = 0
    buckets: dict[str, int] = field(default_factory=dict)
    missing_captions: list[str] = field(default_factory=list)
    empty_captions: list[str] = field(default_factory=list)
    unreadable_captions: list[dict[str, str]] = field(default_factory=list)
    unreadable_images: list[dict[str, str]] = field(default_factory=list)
    top_tags: list[tuple[str, int]] = field(default_factory=list)

    @property
    def samples(self) -> int:
        """Images seen per epoch: readable images times repeats."""
        return self.images * self.repeats


@dataclass
class Report:
    resolution: Size
    bucket_params: BucketParams
    folders: list[FolderReport]
    near_duplicates: list[list[str]]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not any(problem.severity == ERROR for problem in self.problems)

    def bucket_totals(self) -> dict[str, int]:
        """Images per bucket over all folders."""
        totals: Counter[str] = Counter()
        for folder in self.folders:
            totals.update(folder.buckets)
        return dict(sorted(totals.items(), key=lambda item: _bucket_sort_key(item[0])))

    def to_dict(self) -> dict:
        """JSON-ready form; the schema is what ``doctor --json`` prints."""
        return {
            "ok": self.ok,
            "resolution": list(self.resolution),
            "buckets": {**asdict(self.bucket_params), "resolution": list(self.resolution)},
            "totals": {
                "folders": len(self.folders),
                "images": sum(folder.images for folder in self.folders),
                "samples_per_epoch": sum(folder.samples for folder in self.folders),
                "unreadable_images": sum(len(folder.unreadable_images) for folder in self.folders),
                "missing_captions": sum(len(folder.missing_captions) for folder in self.folders),
                "buckets": self.bucket_totals(),
            },
            "folders": [{**asdict(folder), "samples": folder.samples} for folder in self.folders],
            "near_duplicates": self.near_duplicates,
            "problems": [asdict(problem) for problem in self.problems],
        }


def _bucket_sort_key(name: str) -> tuple[int, int]:
    width, height = name.split("x")
    return int(width), int(height)


def dataset_report(
    folders: Sequence[Path],
    bucket_params: BucketParams,
    caption_extension: str = DEFAULT_CAPTION_EXTENSION,
    on_bad_image: str = "error",
    duplicate_distance: int | None = DEFAULT_MAX_DISTANCE,
    top_tags: int = 10,
) -> Report:
    """Check image folders as a training run with ``bucket_params`` would read them.

    ``on_bad_image="skip"`` grades unreadable images as warnings (the run would skip them);
    ``duplicate_distance=None`` turns the near-duplicate search off.
    """
    assigner = BucketAssigner(bucket_params)
    reports: list[FolderReport] = []
    problems: list[Problem] = []
    hashed: list[tuple[str, Fingerprint]] = []
    for folder in folders:
        report = _scan_folder(folder, assigner, caption_extension, top_tags, hashed)
        reports.append(report)
        problems += _folder_problems(report, folder, bucket_params, on_bad_image)
    groups: list[list[str]] = []
    if duplicate_distance is not None:
        for members in near_duplicate_groups([value for _, value in hashed], duplicate_distance):
            groups.append([hashed[index][0] for index in members])
            problems.append(Problem(WARNING, "", f"near-duplicate images: {', '.join(groups[-1])}"))
    return Report(bucket_params.resolution, bucket_params, reports, groups, problems)


def _scan_folder(
    folder: Path, assigner: BucketAssigner, extension: str, top_tags: int, hashed: list[tuple[str, Fingerprint]]
) -> FolderReport:
    """Read every image and caption of one folder; appends ``(path, fingerprint)`` to ``hashed``."""
    repeats, tokens = parse_repeat_folder(folder.name) or (1, "")
    report = FolderReport(str(folder), repeats, tokens)
    sizes: list[Size] = []
    captions: list[str] = []
    buckets: Counter[str] = Counter()
    resolution_area = assigner.params.max_area
    for path in tqdm(list_images(folder), desc=folder.name, unit="img", disable=None, leave=False):
        try:
            image = load_image_rgb(path)
        except ImageLoadError as error:
            report.unreadable_images.append({"path": str(path), "reason": error.reason})
            continue
        sizes.append(image.size)
        hashed.append((str(path), fingerprint(image)))
        bucket = assigner.plan(image.size).bucket
        buckets[f"{bucket[0]}x{bucket[1]}"] += 1
        report.below_resolution += image.size[0] * image.size[1] < resolution_area
        try:
            caption = read_caption_for(path, extension)
        except CaptionError as error:
            report.unreadable_captions.append({"path": str(error.path), "reason": error.reason})
            continue
        if caption is None:
            report.missing_captions.append(str(path))
        elif not caption:
            report.empty_captions.append(str(path))
        else:
            captions.append(caption)
    report.images = len(sizes)
    if sizes:
        report.smallest = min(sizes, key=lambda size: size[0] * size[1])
        report.largest = max(sizes, key=lambda size: size[0] * size[1])
    report.buckets = dict(sorted(buckets.items(), key=lambda item: _bucket_sort_key(item[0])))
    report.top_tags = tag_frequencies(captions).most_common(top_tags)
    return report


def _folder_problems(report: FolderReport, folder: Path, params: BucketParams, on_bad_image: str) -> list[Problem]:
    where = report.path
    found: list[Problem] = []
    if parse_repeat_folder(folder.name) is None:
        found.append(Problem(WARNING, where, "no 'N_' repeat prefix in the folder name: counted with 1 repeat"))
    if report.images == 0:
        found.append(Problem(ERROR, where, "no readable images"))
    if report.unreadable_images:
        severity = WARNING if on_bad_image == "skip" else ERROR
        names = ", ".join(f"{item['path']} ({item['reason']})" for item in report.unreadable_images)
        found.append(Problem(severity, where, f"{len(report.unreadable_images)} unreadable image(s): {names}"))
    if report.unreadable_captions:
        names = ", ".join(f"{item['path']} ({item['reason']})" for item in report.unreadable_captions)
        found.append(Problem(ERROR, where, f"{len(report.unreadable_captions)} unreadable caption(s): {names}"))
    uncaptioned = len(report.missing_captions) + len(report.empty_captions)
    if uncaptioned and not report.class_tokens:
        found.append(
            Problem(
                ERROR,
                where,
                f"{uncaptioned} image(s) without caption and no class tokens in the folder name "
                "(write captions, or name the folder like '10_sks dog')",
            )
        )
    elif uncaptioned:
        found.append(
            Problem(WARNING, where, f"{uncaptioned} image(s) without caption will train on '{report.class_tokens}'")
        )
    if report.below_resolution and not params.no_upscale:
        width, height = params.resolution
        found.append(
            Problem(
                WARNING, where, f"{report.below_resolution} image(s) smaller than {width}x{height} will be upscaled"
            )
        )
    return found


def format_report(report: Report) -> str:
    """The human-readable report: a table per folder, buckets, tags, then problems."""
    width, height = report.resolution
    params = report.bucket_params
    if not params.enabled:
        bucketing = "no buckets"
    elif params.no_upscale:
        bucketing = f"buckets from image sizes, steps {params.steps}"
    else:
        bucketing = f"buckets {params.min_reso}-{params.max_reso} px, steps {params.steps}"
    header = ("folder", "repeats", "images", "samples", "smallest", "largest", "below res", "no caption", "unreadable")
    rows = [header] + [
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
        )
        for folder in report.folders
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"dataset check: resolution {width}x{height}, {bucketing}", ""]
    lines += [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in rows
    ]
    lines += [
        "",
        "buckets (images): "
        + (", ".join(f"{name}: {count}" for name, count in report.bucket_totals().items()) or "none"),
    ]
    for folder in report.folders:
        if folder.top_tags:
            tags = ", ".join(f"{tag} ({count})" for tag, count in folder.top_tags)
            lines.append(f"top tags in {Path(folder.path).name}: {tags}")
    lines.append("")
    if report.problems:
        lines += [
            f"{problem.severity.upper()}: {problem.folder + ': ' if problem.folder else ''}{problem.message}"
            for problem in report.problems
        ]
    lines.append("OK: ready to train" if report.ok else "blocking problems found (marked ERROR)")
    return "\n".join(lines)


def _size(size: tuple[int, int] | None) -> str:
    return f"{size[0]}x{size[1]}" if size else "-"
