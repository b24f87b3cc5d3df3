"""'caption': write natural-language captions with a local captioning model (BLIP by default)."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from library.data.captions import join_tags
from library.data.images import list_images
from preprocess.captioners import CAPTIONERS, GenerationSettings
from preprocess.common import (
    Destination,
    Summary,
    add_output_arguments,
    add_source_argument,
    caption_extension,
    check_source,
    positive_int,
)
from preprocess.labelling import add_labelling_arguments, label_images


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("caption", help="caption images with a local model (BLIP)", description=__doc__)
    add_source_argument(parser)
    add_output_arguments(parser)
    parser.add_argument("--model", type=Path, required=True, metavar="DIR", help="local model folder")
    parser.add_argument(
        "--kind", choices=sorted(CAPTIONERS), default="blip", help="model family (default: %(default)s)"
    )
    parser.add_argument("--prefix", default="", help="text put first, e.g. a trigger word ('sks dog')")
    parser.add_argument("--suffix", default="", help="text put last")
    parser.add_argument("--max-length", type=positive_int, default=GenerationSettings.max_length, help="max tokens")
    parser.add_argument("--min-length", type=int, default=GenerationSettings.min_length, help="min tokens")
    parser.add_argument("--num-beams", type=positive_int, default=GenerationSettings.num_beams)
    parser.add_argument("--device", default=GenerationSettings.device, help="torch device (default: %(default)s)")
    add_labelling_arguments(parser, default_batch=4)
    parser.set_defaults(run=run)


def decorate(caption: str, prefix: str, suffix: str) -> str:
    """``prefix, caption, suffix`` with empty parts left out."""
    return join_tags(part for part in (prefix.strip(), caption, suffix.strip()) if part)


def run(args: argparse.Namespace) -> int:
    source = check_source(args.src)
    destination = Destination.from_args(source, args)
    settings = GenerationSettings(args.max_length, args.min_length, args.num_beams, args.device)
    captioner = CAPTIONERS[args.kind](args.model, settings)

    def labeller(images: list[Image.Image]) -> list[str]:
        return [decorate(text, args.prefix, args.suffix) for text in captioner(images)]

    summary = Summary("caption")
    images = list_images(source, recursive=True)
    label_images(images, destination, caption_extension(args), args.existing, args.batch_size, labeller, summary)
    print(summary.render(args.dry_run))
    return 0
