"""What every preprocessing command shares: input/output arguments, the output folder, the summary.

Commands never change the source dataset unless ``--in-place`` is given: by default they write a
complete copy (images and captions, same sub-folders such as ``10_sks dog``) under ``--out``.
Every write is atomic (a killed command leaves each file old or new, never half-written), and ``--dry-run``
writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from library.atomic_files import atomic_path
from library.data.buckets import BucketParams, Size
from library.data.captions import DEFAULT_CAPTION_EXTENSION, caption_path
from library.models.families import FAMILY_NAMES, get_family

logger = logging.getLogger(__name__)


class UsageError(Exception):
    """A problem with the command line or the folders given; printed as one line, exit code 2."""


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_size(text: str) -> Size:
    """``"512"`` -> (512, 512); ``"768x512"`` or ``"768,512"`` -> (768, 512) as (width, height)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"size must be N or WxH with positive numbers, got {text!r}")
    return (values[0], values[-1])


def add_bucket_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The bucketing options of a training config; the group is returned for a command's on/off flag."""
    group = parser.add_argument_group("aspect-ratio buckets (same meaning as in a training config)")
    group.add_argument(
        "--min-bucket-reso", type=int, default=BucketParams.min_reso, help="smallest bucket side (default: %(default)s)"
    )
    group.add_argument(
        "--max-bucket-reso", type=int, default=BucketParams.max_reso, help="largest bucket side (default: %(default)s)"
    )
    group.add_argument(
        "--bucket-reso-steps",
        type=int,
        default=BucketParams.steps,
        help="bucket sides are multiples of this (default: %(default)s)",
    )
    group.add_argument(
        "--bucket-no-upscale", action="store_true", help="buckets from each image's own size, never enlarged"
    )
    group.add_argument(
        "--family", choices=FAMILY_NAMES, default="sd1",
        help="the base model's family: sizes are fitted to its multiple, 8 px for Stable Diffusion, 16 px for FLUX.1 "
        "(default: %(default)s)",
    )
    return group


def bucket_params(args: argparse.Namespace, resolution: Size, enabled: bool = True) -> BucketParams:
    """:class:`BucketParams` from :func:`add_bucket_arguments` options; bad values are a usage error."""
    try:
        return BucketParams(
            resolution=resolution,
            enabled=enabled,
            min_reso=args.min_bucket_reso,
            max_reso=args.max_bucket_reso,
            steps=args.bucket_reso_steps,
            no_upscale=args.bucket_no_upscale,
            multiple=get_family(args.family).resolution_multiple,
        )
    except ValueError as error:
        raise UsageError(f"bucket settings: {error}") from None


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", type=Path, metavar="SRC", help="dataset folder (sub-folders such as '10_sks dog' included)"
    )
    parser.add_argument(
        "--caption-extension",
        default=DEFAULT_CAPTION_EXTENSION,
        help="suffix of caption files beside the images (default: %(default)s)",
    )


def add_output_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    target = parser.add_mutually_exclusive_group(required=required)
    target.add_argument("--out", type=Path, metavar="DST", help="write the result as a new dataset folder")
    target.add_argument("--in-place", action="store_true", help="change the files in SRC itself")
    parser.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")


def caption_extension(args: argparse.Namespace) -> str:
    ext: str = args.caption_extension
    return ext if ext.startswith(".") else f".{ext}"


def check_source(src: Path) -> Path:
    """The resolved source folder, or a :class:`UsageError` saying what is wrong with it."""
    if not src.exists():
        raise UsageError(f"{src}: folder not found")
    if not src.is_dir():
        raise UsageError(f"{src}: not a folder; give the dataset folder that holds the images")
    return src.resolve()


class Destination:
    """Where a command's results go: a mirror of the source tree under ``out``, or the source itself."""

    def __init__(self, source_root: Path, out: Path | None, dry_run: bool) -> None:
        self.source_root = source_root
        self.dry_run = dry_run
        if out is None:
            self.root = source_root
        else:
            self.root = out.resolve()
            if self.root == source_root or source_root in self.root.parents:
                raise UsageError(f"{out}: the output folder must be outside {source_root}; or use --in-place")
        self.in_place = self.root == source_root

    @classmethod
    def from_args(cls, source_root: Path, args: argparse.Namespace) -> Destination:
        return cls(source_root, None if args.in_place else args.out, args.dry_run)

    def path_for(self, source: Path) -> Path:
        """The output path mirroring ``source`` (a file under the source root)."""
        return self.root / source.relative_to(self.source_root)

    def write_text(self, path: Path, text: str) -> None:
        self._write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save_png(self, image: Image.Image, path: Path) -> None:
        self._write(path, lambda tmp: image.save(tmp, format="PNG"))

    def copy_file(self, source: Path, path: Path) -> None:
        """Copy ``source`` to ``path`` unless they are the same file (in-place runs)."""
        if source.resolve() != path.resolve():
            self._write(path, lambda tmp: shutil.copyfile(source, tmp))

    def copy_image_with_caption(self, image: Path, extension: str) -> None:
        """Mirror an image and its caption (if any) unchanged, so ``--out`` holds the whole dataset."""
        self.copy_file(image, self.path_for(image))
        caption = caption_path(image, extension)
        if caption.is_file():
            self.copy_file(caption, self.path_for(caption))

    def remove(self, path: Path) -> None:
        if not self.dry_run:
            path.unlink(missing_ok=True)

    def _write(self, path: Path, write: Callable[[Path], object]) -> None:
        """``write(temporary)`` fills a temporary file that then replaces ``path`` (folders made as needed)."""
        if self.dry_run:
            return
        with atomic_path(path) as tmp:
            write(tmp)


@dataclass
class Summary:
    """Counters and per-file problems of one command run, rendered as the closing report."""

    title: str
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, key: str, amount: int = 1) -> None:
        self.counts[key] += amount

    def problem(self, path: Path, reason: str) -> None:
        """Record a file that was skipped; it is named in the summary."""
        logger.warning("%s: %s", path, reason)
        self.problems.append((path, reason))

    def render(self, dry_run: bool = False) -> str:
        heading = f"{self.title} (dry run: nothing written)" if dry_run else self.title
        lines = [heading]
        lines += [f"  {key}: {value}" for key, value in self.counts.items()]
        if self.problems:
            lines.append(f"  skipped files: {len(self.problems)}")
            lines += [f"    {path}: {reason}" for path, reason in self.problems]
        return "\n".join(lines)


def format_frequencies(counts: list[tuple[str, int]], total: int) -> str:
    """A small table of the most frequent tags, with the share of the ``total`` captions carrying each."""
    if not counts:
        return "no tags"
    width = max(len(tag) for tag, _ in counts)
    lines = [f"top tags over {total} captions:"]
    lines += [f"  {tag:<{width}}  {count:>6}  {count / total:6.1%}" for tag, count in counts]
    return "\n".join(lines)
