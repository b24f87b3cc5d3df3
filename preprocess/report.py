"""The dataset pre-flight report behind ``doctor``.

For each image folder: repeats and class tokens from the ``N_name`` folder convention, read as training reads it
(:mod:`library.data.repeat_folders`), then the shared folder report (:mod:`library.data.dataset_report`, also
printed by the trainer at start) built from fully decoded images; across folders: near-duplicate images. Problems
are graded: an ``error`` blocks training, a ``warning`` is worth a look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from library.data.buckets import BucketAssigner, BucketParams, Size
from library.data.captions import DEFAULT_CAPTION_EXTENSION, CaptionError, read_caption_for
from library.data.dataset_report import (
    FolderReport,
    SeenImage,
    bucket_totals,
    describe_bucketing,
    folder_lines,
    folder_report,
)
from library.data.images import ImageLoadError, describe_unreadable, list_folder, list_images, load_image_and_alpha
from library.data.masks import MaskError, find_mask, mask_folder_for, mask_index, read_mask_file
from library.data.repeat_folders import ZERO_REPEATS, RepeatFolder, RepeatFolderError, parse_repeat_folder
from preprocess.duplicates import DEFAULT_MAX_DISTANCE, Fingerprint, fingerprint, near_duplicate_groups

ERROR, WARNING = "error", "warning"


def find_image_folders(root: Path, caption_extension: str = DEFAULT_CAPTION_EXTENSION) -> list[Path]:
    """``root`` if it holds images itself, then each direct sub-folder that holds images or entries the scan
    passes over (a folder of only GIFs is reported, not skipped)."""
    folders = [root] if list_images(root) else []
    subfolders = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    for path in subfolders:
        listing = list_folder(path, caption_extension)
        if listing.images or listing.passed_over:
            folders.append(path)
    return folders


@dataclass
class Problem:
    severity: str
    folder: str
    message: str


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
                "passed_over": sum(len(folder.passed_over) for folder in self.folders),
                "missing_captions": sum(len(folder.missing_captions) for folder in self.folders),
                "buckets": bucket_totals(self.folders),
            },
            "folders": [asdict(folder) for folder in self.folders],
            "near_duplicates": self.near_duplicates,
            "problems": [asdict(problem) for problem in self.problems],
        }


def dataset_report(
    folders: Sequence[Path],
    bucket_params: BucketParams,
    caption_extension: str = DEFAULT_CAPTION_EXTENSION,
    on_bad_image: str = "error",
    duplicate_distance: int | None = DEFAULT_MAX_DISTANCE,
    top_tags: int = 10,
    masks: MaskSource | None = None,
) -> Report:
    """Check image folders as a training run with ``bucket_params`` would read them.

    ``on_bad_image="skip"`` grades unreadable images as warnings (the run would skip them);
    ``duplicate_distance=None`` turns the near-duplicate search off; ``masks`` (masked loss) counts each folder's
    images with a mask.
    """
    assigner = BucketAssigner(bucket_params)
    reports: list[FolderReport] = []
    problems: list[Problem] = []
    hashed: list[tuple[str, Fingerprint]] = []
    for folder in folders:
        try:
            named = parse_repeat_folder(folder)
        except RepeatFolderError as error:
            problems.append(Problem(ERROR, str(folder), error.reason))  # training refuses the name: nothing to scan
            continue
        report = _scan_folder(folder, named, assigner, caption_extension, top_tags, hashed, masks)
        reports.append(report)
        problems += _folder_problems(report, named, bucket_params, on_bad_image)
        problems += _mask_problems(report, masks)
    groups: list[list[str]] = []
    if duplicate_distance is not None:
        for members in near_duplicate_groups([value for _, value in hashed], duplicate_distance):
            groups.append([hashed[index][0] for index in members])
            problems.append(Problem(WARNING, "", f"near-duplicate images: {', '.join(groups[-1])}"))
    return Report(bucket_params.resolution, bucket_params, reports, groups, problems)


@dataclass(frozen=True)
class MaskSource:
    """Masked loss as the run would use it: masks from ``mask_dir`` (same stem), or else the alpha channel."""

    mask_dir: Path | None = None

    def no_mask_reason(self, path: Path, size: Size, has_alpha: bool, index: dict[str, list[Path]] | None) -> str:
        """Why the image at ``path`` has no usable mask ("" when it has one); ``index`` is its mask folder's."""
        if index is None:
            return "" if has_alpha else "no alpha channel: weighs 1 everywhere"
        try:
            mask_file = find_mask(index, path)
            if mask_file is None:
                return f"no mask in {self.mask_dir}"
            read_mask_file(mask_file, size)
        except MaskError as error:
            return str(error)
        return ""


def _scan_folder(
    folder: Path,
    named: RepeatFolder | None,
    assigner: BucketAssigner,
    extension: str,
    top_tags: int,
    hashed: list[tuple[str, Fingerprint]],
    masks: MaskSource | None = None,
) -> FolderReport:
    """Decode every image and read every caption of one folder, noting the entries passed over; appends
    ``(path, fingerprint)`` to ``hashed``.
    A folder without the ``N_`` prefix counts with 1 repeat and no class tokens."""
    repeats, tokens = (named.repeats, named.class_tokens or "") if named else (1, "")
    seen: list[SeenImage] = []
    unreadable: list[tuple[Path, str]] = []
    listing = list_folder(folder, extension)
    index = mask_index(mask_folder_for(masks.mask_dir, folder)) if masks and masks.mask_dir else None
    for path in tqdm(listing.images, desc=folder.name, unit="img", disable=None, leave=False):
        try:
            image, alpha = load_image_and_alpha(path)
        except ImageLoadError as error:
            unreadable.append((path, error.reason))
            continue
        hashed.append((str(path), fingerprint(image)))
        bucket = assigner.plan(image.size).bucket
        no_mask = masks.no_mask_reason(path, image.size, alpha is not None, index) if masks else None
        try:
            caption, unreadable_caption = read_caption_for(path, extension), None
        except CaptionError as error:
            caption, unreadable_caption = None, (error.path, error.reason)
        seen.append(SeenImage(path, image.size, bucket, caption, repeats, unreadable_caption, no_mask))
    return folder_report(
        folder, repeats, tokens, seen, assigner.params.resolution, top_tags, unreadable, listing.passed_over
    )


def _folder_problems(
    report: FolderReport, named: RepeatFolder | None, params: BucketParams, on_bad_image: str
) -> list[Problem]:
    where = report.path
    found: list[Problem] = []
    if named is None:
        found.append(Problem(WARNING, where, "no 'N_' repeat prefix in the folder name: counted with 1 repeat"))
    elif named.repeats == 0:
        found.append(Problem(WARNING, where, ZERO_REPEATS))
    if report.images == 0:
        found.append(Problem(ERROR, where, "no readable images"))
    if report.unreadable_images:
        severity = WARNING if on_bad_image == "skip" else ERROR
        bad = [ImageLoadError(item["path"], item["reason"]) for item in report.unreadable_images]
        found.append(Problem(severity, where, describe_unreadable(bad, limit=len(bad))))
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


def _mask_problems(report: FolderReport, masks: MaskSource | None) -> list[Problem]:
    """A mask folder must hold a readable mask for every image (the run stops otherwise); an image without
    alpha only trains unmasked."""
    if masks is None or not report.without_mask:
        return []
    names = ", ".join(f"{Path(item['path']).name} ({item['reason']})" for item in report.without_mask)
    severity = ERROR if masks.mask_dir else WARNING
    return [Problem(severity, report.path, f"{len(report.without_mask)} image(s) without a mask: {names}")]


def format_report(report: Report) -> str:
    """The human-readable report: the folder table, buckets and tags, then problems."""
    width, height = report.resolution
    lines = [f"dataset check: resolution {width}x{height}, {describe_bucketing(report.bucket_params)}", ""]
    lines += folder_lines(report.folders)
    lines.append("")
    lines += [
        f"{problem.severity.upper()}: {problem.folder + ': ' if problem.folder else ''}{problem.message}"
        for problem in report.problems
    ]
    lines.append("OK: ready to train" if report.ok else "blocking problems found (marked ERROR)")
    return "\n".join(lines)
