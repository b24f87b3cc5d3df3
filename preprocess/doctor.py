"""'doctor': check dataset folders before training; exit code 1 when a problem would block the run.

Each DIR is an image folder, or a training folder whose 'N_name' sub-folders hold the images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from library.data.captions import DEFAULT_CAPTION_EXTENSION
from preprocess.common import UsageError, add_bucket_arguments, bucket_params, caption_extension, parse_size
from preprocess.duplicates import DEFAULT_MAX_DISTANCE
from preprocess.report import MaskSource, dataset_report, find_image_folders, format_report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="pre-flight check of dataset folders",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    parser.add_argument(
        "--resolution", type=parse_size, default=(512, 512), help="training resolution N or WxH (default: 512)"
    )
    buckets = add_bucket_arguments(parser)
    buckets.add_argument("--no-buckets", action="store_true", help="training without aspect-ratio buckets")
    parser.add_argument("--caption-extension", default=DEFAULT_CAPTION_EXTENSION)
    parser.add_argument(
        "--skip-bad-images", action="store_true", help="unreadable images are warnings (the run skips them)"
    )
    parser.add_argument(
        "--duplicate-distance",
        type=int,
        default=DEFAULT_MAX_DISTANCE,
        help="max dHash bit difference of near-duplicates; -1 turns the check off",
    )
    masks = parser.add_argument_group("masked loss: count the images with a mask")
    masks.add_argument("--masked-loss", action="store_true", help="masks from each image's alpha channel")
    masks.add_argument("--mask-dir", type=Path, help="masks from this folder (same stem as each image)")
    parser.add_argument("--top", type=int, default=10, help="top tags shown per folder (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    folders: list[Path] = []
    for root in args.dirs:
        if not root.is_dir():
            raise UsageError(f"{root}: folder not found")
        folders += find_image_folders(root, caption_extension(args)) or [root]
    if args.mask_dir is not None and not args.mask_dir.is_dir():
        raise UsageError(f"--mask-dir: folder not found: {args.mask_dir}")
    report = dataset_report(
        folders,
        bucket_params(args, args.resolution, enabled=not args.no_buckets),
        caption_extension=caption_extension(args),
        on_bad_image="skip" if args.skip_bad_images else "error",
        duplicate_distance=None if args.duplicate_distance < 0 else args.duplicate_distance,
        top_tags=args.top,
        masks=MaskSource(args.mask_dir) if args.masked_loss or args.mask_dir else None,
    )
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0 if report.ok else 1
