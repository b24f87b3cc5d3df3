"""'crop': resize and crop images to a fixed size or to training buckets, as PNG + caption pairs.

Images are never enlarged unless '--upscale' is given: a small image is cropped to the target's
aspect ratio at its own scale instead. Captions are copied beside every image they belong to,
including tiles ('--split') and mirrored copies ('--flip'). Sub-folders of SRC ('10_sks dog') are
kept under DST; '--keep-folder-name' keeps SRC's own name too, for cropping one such folder. Masks for
masked loss come along: an image's alpha channel stays in its output PNG, and with '--mask-dir' each
image's mask file (same stem) is cropped exactly like it and written under '--mask-out' in the layout
of the output.
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
from library.data.images import ImageLoadError, list_images, load_image_and_alpha
from library.data.masks import MaskError, find_mask, mask_folder_for, mask_index, read_mask_file, resize_mask
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
    parser.add_argument(
        "--mask-dir", type=Path, help="masked loss: folder of masks (same stem as each image) to crop alike"
    )
    parser.add_argument("--mask-out", type=Path, help="where the cropped masks go (needed with --mask-dir)")
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


def render_outputs(
    image: Image.Image, target: Size, settings: CropSettings, mask: Image.Image | None = None
) -> list[tuple[str, Image.Image, Image.Image | None]]:
    """The output images for one source image, each with a name suffix ("" for the main one) and its ``mask``
    (an ``L`` image of the image's size: an alpha channel or a mask file) cropped alike."""
    if settings.mode == "resize":
        size = fit_inside(image.size, target, settings.upscale)
        shaped = [("", _resized(image, size), _resized_mask(mask, size))]
    else:
        target = reachable_target(image.size, target, settings.multiple, settings.upscale)
        scaled_size = cover_size(image.size, target)
        scaled, scaled_mask = _resized(image, scaled_size), _resized_mask(mask, scaled_size)
        if settings.split and needs_split(scaled_size, target, settings.split_threshold):
            boxes = [window.box for window in tile_windows(scaled_size, target, settings.split_overlap)]
            named = [(f"-tile{index}", box) for index, box in enumerate(boxes)]
        else:
            focus = focal_point(image, settings.weights) if settings.mode == "focal" else (0.5, 0.5)
            named = [("", centred_window(scaled_size, target, focus).box)]
        shaped = [(suffix, scaled.crop(box), _crop(scaled_mask, box)) for suffix, box in named]
    if settings.flip:
        shaped += [(f"{suffix}-flip", ImageOps.mirror(img), _mirror(m)) for suffix, img, m in shaped]
    return shaped


def _resized(image: Image.Image, size: Size) -> Image.Image:
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _resized_mask(mask: Image.Image | None, size: Size) -> Image.Image | None:
    return resize_mask(mask, size) if mask is not None else None


def _crop(mask: Image.Image | None, box: tuple[int, int, int, int]) -> Image.Image | None:
    return mask.crop(box) if mask is not None else None


def _mirror(mask: Image.Image | None) -> Image.Image | None:
    return ImageOps.mirror(mask) if mask is not None else None


class MaskFiles:
    """``--mask-dir`` / ``--mask-out``: where each image's mask is read and its crops are written."""

    def __init__(self, source: Path, out: Path) -> None:
        self.source, self.out = source, out
        self._indexes: dict[Path, dict[str, list[Path]]] = {}  # mask folder -> its masks by stem, read once

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MaskFiles | None:
        if args.mask_dir is None:
            if args.mask_out is not None:
                raise UsageError("--mask-out needs --mask-dir (the masks to crop)")
            return None
        if not args.mask_dir.is_dir():
            raise UsageError(f"--mask-dir: folder not found: {args.mask_dir}")
        if args.mask_out is None:
            raise UsageError("--mask-dir needs --mask-out (where the cropped masks go)")
        return cls(args.mask_dir, args.mask_out)

    def find(self, image: Path) -> Path | None:
        """``image``'s mask file (see :func:`library.data.masks.mask_folder_for`), None when it has none."""
        folder = mask_folder_for(self.source, image.parent)
        if folder not in self._indexes:
            self._indexes[folder] = mask_index(folder)
        return find_mask(self._indexes[folder], image)

    def output_for(self, output: Path, destination: Destination) -> Path:
        """The cropped mask of output image ``output``: the same relative path under ``out``."""
        return self.out / output.relative_to(destination.root)


def _load(path: Path, masks: MaskFiles | None) -> tuple[Image.Image, Image.Image | None, Path | None]:
    """The image, the mask to crop with it (its mask file, else its alpha channel) and the mask file."""
    mask_file = masks.find(path) if masks is not None else None
    image, alpha = load_image_and_alpha(path)
    if mask_file is None:
        return image, alpha, None
    return image, read_mask_file(mask_file, image.size), mask_file


def run(args: argparse.Namespace) -> int:
    source = check_source(args.src)
    if args.keep_folder_name and args.out is None:
        raise UsageError("--keep-folder-name needs --out DST (in place, the folder keeps its name anyway)")
    out = args.out / source.name if args.keep_folder_name else args.out
    destination = Destination(source, None if args.in_place else out, args.dry_run)
    settings = CropSettings.from_args(args)
    masks = MaskFiles.from_args(args)
    extension = caption_extension(args)
    summary = Summary("crop")
    images = list_images(source, recursive=True)
    bases = output_bases(images, destination)
    written: set[Path] = set()
    processed: list[Path] = []
    for path in tqdm(images, desc="crop", unit="img", disable=None):
        try:
            image, mask, mask_file = _load(path, masks)
            caption = read_caption_for(path, extension)
        except (ImageLoadError, CaptionError) as error:
            summary.problem(error.path, error.reason)
            continue
        except MaskError as error:
            summary.problem(path, str(error))
            continue
        if masks is not None and mask_file is None:
            summary.problem(path, f"no mask in {masks.source} (cropped without one)")
        target = settings.target_for(image.size)
        outputs = render_outputs(image, target, settings, mask)
        for suffix, result, cropped_mask in outputs:
            output = bases[path].with_name(bases[path].name + suffix + ".png")
            if mask_file is not None:
                destination.save_png(cropped_mask, masks.output_for(output, destination))
            elif cropped_mask is not None:
                result = result.copy()
                result.putalpha(cropped_mask)  # the alpha channel stays with its image
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
