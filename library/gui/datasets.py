"""The dataset browser's view of a dataset folder: its `N_name` groups with each image's caption, the tag
frequencies, and the doctor's findings per image.

Every path is confined to one configured datasets root (paths.py) and named relative to it. Folders are found as
the doctor finds them and captions are read as the pipeline reads them, so what the page shows is what a run trains
on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from library.data.buckets import BucketParams
from library.data.captions import CaptionError, read_caption_for, tag_frequencies
from library.data.images import IMAGE_EXTENSIONS, is_image_file, list_folder
from library.data.repeat_folders import RepeatFolderError, parse_repeat_folder
from preprocess.report import dataset_report, find_image_folders

from .paths import PathRefused, confine, relative_name, within_dataset

_EXTENSION = re.compile(r"\.?[A-Za-z0-9_-]{1,16}")


def dataset_root(roots: Sequence[Path], index: int) -> Path:
    """The configured datasets root number ``index``."""
    if not 0 <= index < len(roots):
        raise PathRefused(f"datasets/{index}: no such configured folder")
    return roots[index]


def dataset_folder(root: Path, relative: str) -> Path:
    """A dataset folder inside ``root``, refused when outside it or not a folder."""
    folder = confine(root, relative)
    if not folder.is_dir():
        raise PathRefused(f"{relative}: not a folder")
    return folder


def dataset_image(root: Path, relative: str) -> Path:
    """An image file inside ``root``: anything else (a caption, a model, a folder) is refused."""
    image = confine(root, relative)
    if not is_image_file(image) or not image.is_file():
        raise PathRefused(f"{relative}: not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return image


def caption_suffix(extension: str) -> str:
    """A caption extension as the pipeline uses it (``txt`` -> ``.txt``); one naming an image or a path is refused,
    so a caption write can never replace an image."""
    suffix = extension if extension.startswith(".") else f".{extension}"
    if not _EXTENSION.fullmatch(extension) or suffix.lower() in IMAGE_EXTENSIONS:
        raise PathRefused(f"caption extension {extension!r}: give a suffix such as .txt or .caption")
    return suffix


def list_datasets(roots: Sequence[Path]) -> list[dict[str, Any]]:
    """The folders directly inside each datasets root, the ones the picker offers."""
    found = []
    for index, root in enumerate(roots):
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if path.is_dir() and not path.name.startswith(".") and path.resolve().is_relative_to(root.resolve()):
                found.append({"root": index, "path": path.name, "label": f"{root.name}/{path.name}"})
    return found


def _image_entry(root: Path, image: Path, extension: str) -> tuple[dict[str, Any], str | None]:
    try:
        caption, error = read_caption_for(image, extension), None
    except CaptionError as problem:
        caption, error = None, problem.reason
    entry = {"path": relative_name(root, image), "name": image.name, "caption": caption, "caption_error": error}
    return entry, caption


def _group(root: Path, folder: Path, extension: str, captions: list[str]) -> dict[str, Any]:
    """One image folder: its repeats and class tokens as training reads the name, and its images."""
    try:
        named, error = parse_repeat_folder(folder), None
    except RepeatFolderError as problem:
        named, error = None, problem.reason
    images = []
    for image in list_folder(folder, extension).images:
        entry, caption = _image_entry(root, image, extension)
        images.append(entry)
        if caption:
            captions.append(caption)
    return {"folder": relative_name(root, folder), "name": folder.name, "repeats": named.repeats if named else None,
            "class_tokens": named.class_tokens if named else None, "name_error": error, "images": images}


def dataset_listing(root: Path, folder: Path, extension: str) -> dict[str, Any]:
    """The folder's image groups (``N_name`` sub-folders, or the folder itself) and its tag frequencies."""
    captions: list[str] = []
    groups = [_group(root, path, extension, captions) for path in find_image_folders(folder, extension) or [folder]]
    return {"path": relative_name(root, folder), "groups": groups,
            "tags": tag_frequencies(captions).most_common(), "images": sum(len(g["images"]) for g in groups)}


def _finding(findings: dict[str, list[dict[str, str]]], root: Path, path: str, kind: str, message: str) -> None:
    findings.setdefault(relative_name(root, path), []).append({"kind": kind, "message": message})


def dataset_findings(root: Path, folder: Path, extension: str, resolution: int) -> dict[str, Any]:
    """The doctor's report of the folder as a run at ``resolution`` reads it, turned into findings per image
    (too small, near-duplicate, unreadable, no caption) and the folder-wide problems."""
    params = BucketParams(resolution=(resolution, resolution))
    report = dataset_report(find_image_folders(folder, extension) or [folder], params, caption_extension=extension)
    findings: dict[str, list[dict[str, str]]] = {}
    for part in report.folders:
        for item in part.unreadable_images:
            _finding(findings, root, item["path"], "unreadable", f"unreadable: {item['reason']}")
        for path in part.missing_captions:
            _finding(findings, root, path, "no_caption", "no caption file")
        for path in part.empty_captions:
            _finding(findings, root, path, "no_caption", "empty caption")
        for path in part.below_resolution_images:
            _finding(findings, root, path, "small", f"smaller than {resolution}x{resolution}")
    for group in report.near_duplicates:
        for path in group:
            others = ", ".join(Path(other).name for other in group if other != path)
            _finding(findings, root, path, "duplicate", f"near-duplicate of {others}")
    problems = [{"severity": problem.severity, "message": within_dataset(folder, problem.message),
                 "folder": relative_name(folder, problem.folder) if problem.folder else ""}
                for problem in report.problems]
    return {"ok": report.ok, "images": findings, "problems": problems}
