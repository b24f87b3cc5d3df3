"""'crop': resize and crop images to a fixed size or to training buckets, as PNG + caption pairs.

Images are never enlarged unless '--upscale' is given: a small image is cropped to the target's
aspect ratio at its own scale instead. Captions are copied beside every image they belong to,
including tiles ('--split') and mirrored copies ('--flip'). Sub-folders of SRC ('10_sks dog') are
kept under DST; '--keep-folder-name' keeps SRC's own name too, for cropping one such folder.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps
from tqdm import tqdm

from library.data.buckets import BucketAssigner, Size, cover_size
from library.data.captions import CaptionError, caption_path, read_caption_for
from library.data.images import ImageLoadError, list_images, load_image_rgb
from preprocess.common import (
    Destination,
    Summary,
    UsageError,
    add_bucket_arguments,
    add_output_arguments,
    add_source_argument,
    bucket_params,
    caption_extension,
    check_source,
    parse_size,
)
from preprocess.focal import FocalWeights, focal_point
from preprocess.geometry import centred_window, fit_inside, needs_split, reachable_target, tile_windows

logger = logging.getLogger(__name__)

_MODES = {"centre": "centre", "center": "centre", "focal": "focal", "resize": "resize"}
_FIXED_SIZE_MULTIPLE = 8


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "crop",
        help="crop/resize images to a size or to training buckets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_argument(parser)
    add_output_arguments(parser)
    parser.add_argument(
        "--size", type=parse_size, required=True, help="target N or WxH; with --buckets the training resolution"
    )
    parser.add_argument(
        "--mode",
        choices=sorted(_MODES),
        default="centre",
        help="centre crop, focal-point crop, or resize only (no crop)",
    )
    buckets = add_bucket_arguments(parser)
    buckets.add_argument("--buckets", action="store_true", help="crop to each image's bucket for resolution --size")
    parser.add_argument("--upscale", action="store_true", help="allow enlarging images smaller than the target")
    parser.add_argument(
        "--split", action="store_true", help="cut images much longer than the target into overlapping tiles"
    )
    parser.add_argument(
        "--split-threshold",
        type=float,
        default=0.5,
        help="split when a side exceeds the target by this fraction (default: %(default)s)",
    )
    parser.add_argument(
        "--split-overlap", type=float, default=0.2, help="minimum overlap of neighbouring tiles (default: %(default)s)"
    )
    parser.add_argument("--flip", action="store_true", help="also write a mirrored copy of every output")
    parser.add_argument(
        "--keep-folder-name",
        action="store_true",
        help="write into DST/<SRC's folder name>, so cropping one 'N_name' folder keeps its repeats and class",
    )
    focal = parser.add_argument_group("focal mode: how much each cue pulls the crop (0 turns it off)")
    focal.add_argument(
        "--focal-face-weight",
        type=float,
        default=FocalWeights.face,
        help="faces, when OpenCV is installed (default: %(default)s)",
    )
    focal.add_argument(
        "--focal-entropy-weight", type=float, default=FocalWeights.entropy, help="detailed areas (default: %(default)s)"
    )
    focal.add_argument(
        "--focal-edges-weight", type=float, default=FocalWeights.edges, help="strong edges (default: %(default)s)"
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class CropSettings:
    """The crop options, checked; ``assigner`` is set when cropping to buckets."""

    size: Size
    mode: str
    upscale: bool
    split: bool
    split_threshold: float
    split_overlap: float
    flip: bool
    weights: FocalWeights
    assigner: BucketAssigner | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CropSettings:
        if not 0 <= args.split_overlap < 1:
            raise UsageError(f"--split-overlap must be in [0, 1) (got {args.split_overlap})")
        if args.split and _MODES[args.mode] == "resize":
            raise UsageError("--split needs --mode centre or focal (resize mode never crops)")
        assigner = BucketAssigner(bucket_params(args, args.size)) if args.buckets else None
        weights = FocalWeights(args.focal_face_weight, args.focal_entropy_weight, args.focal_edges_weight)
        if min(weights.face, weights.entropy, weights.edges) < 0:
            raise UsageError("--focal-*-weight values must be >= 0")
        return cls(
            args.size,
            _MODES[args.mode],
            args.upscale,
            args.split,
            args.split_threshold,
            args.split_overlap,
            args.flip,
            weights,
            assigner,
        )

    @property
    def multiple(self) -> int:
        return self.assigner.params.steps if self.assigner else _FIXED_SIZE_MULTIPLE

    def target_for(self, size: Size) -> Size:
        return self.assigner.plan(size).bucket if self.assigner else self.size


def render_outputs(image: Image.Image, target: Size, settings: CropSettings) -> list[tuple[str, Image.Image]]:
    """The output images for one source image, each with a name suffix ("" for the main one)."""
    if settings.mode == "resize":
        shaped = [("", _resized(image, fit_inside(image.size, target, settings.upscale)))]
    else:
        target = reachable_target(image.size, target, settings.multiple, settings.upscale)
        scaled_size = cover_size(image.size, target)
        scaled = _resized(image, scaled_size)
        if settings.split and needs_split(scaled_size, target, settings.split_threshold):
            windows = tile_windows(scaled_size, target, settings.split_overlap)
            shaped = [(f"-tile{index}", scaled.crop(window.box)) for index, window in enumerate(windows)]
        else:
            focus = focal_point(image, settings.weights) if settings.mode == "focal" else (0.5, 0.5)
            shaped = [("", scaled.crop(centred_window(scaled_size, target, focus).box))]
    if settings.flip:
        shaped += [(f"{suffix}-flip", ImageOps.mirror(img)) for suffix, img in shaped]
    return shaped


def _resized(image: Image.Image, size: Size) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def run(args: argparse.Namespace) -> int:
    source = check_source(args.src)
    if args.keep_folder_name and args.out is None:
        raise UsageError("--keep-folder-name needs --out DST (in place, the folder keeps its name anyway)")
    out = args.out / source.name if args.keep_folder_name else args.out
    destination = Destination(source, None if args.in_place else out, args.dry_run)
    settings = CropSettings.from_args(args)
    extension = caption_extension(args)
    summary = Summary("crop")
    images = list_images(source, recursive=True)
    bases = output_bases(images, destination)
    written: set[Path] = set()
    processed: list[Path] = []
    for path in tqdm(images, desc="crop", unit="img", disable=None):
        try:
            image = load_image_rgb(path)
            caption = read_caption_for(path, extension)
        except (ImageLoadError, CaptionError) as error:
            summary.problem(error.path, error.reason)
            continue
        target = settings.target_for(image.size)
        outputs = render_outputs(image, target, settings)
        for suffix, result in outputs:
            output = bases[path].with_name(bases[path].name + suffix + ".png")
            destination.save_png(result, output)
            if caption is not None:
                destination.write_text(caption_path(output, extension), caption)
            written.add(output)
        processed.append(path)
        summary.add("images read")
        summary.add("images written", len(outputs))
        summary.add("captions written", len(outputs) if caption is not None else 0)
        if image.size[0] < target[0] or image.size[1] < target[1]:
            summary.add("smaller than target" + ("" if settings.upscale else " (kept, not enlarged)"))
    if destination.in_place:
        _remove_replaced(destination, processed, written, extension)
    print(summary.render(args.dry_run))
    return 0


def output_bases(images: list[Path], destination: Destination) -> dict[Path, Path]:
    """Output path (without suffix) per source image. PNG sources keep their name; another
    image whose stem is taken (``a.jpg`` beside ``a.png``) becomes ``a-jpg``."""
    taken: set[Path] = set()
    bases: dict[Path, Path] = {}
    for path in sorted(images, key=lambda p: p.suffix.lower() != ".png"):
        mirrored = destination.path_for(path)
        base = mirrored.with_suffix("")
        if base in taken:
            base = mirrored.with_name(f"{mirrored.stem}-{mirrored.suffix.lstrip('.').lower()}")
        taken.add(base)
        bases[path] = base
    return bases


def _remove_replaced(destination: Destination, sources: list[Path], written: set[Path], extension: str) -> None:
    """In-place runs: delete source images and captions that no output replaced by name."""
    kept_captions = {caption_path(path, extension) for path in written}
    for source in sources:
        if source not in written:
            destination.remove(source)
        if caption_path(source, extension) not in kept_captions:
            destination.remove(caption_path(source, extension))
