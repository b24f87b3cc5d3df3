"""'tag': write Danbooru-style tag captions with a local WD14 tagger model (ONNX)."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from library.data.captions import join_tags, split_tags, tag_frequencies
from library.data.images import list_images
from preprocess.common import (
    Destination,
    Summary,
    add_output_arguments,
    add_source_argument,
    caption_extension,
    check_source,
    format_frequencies,
    positive_int,
)
from preprocess.labelling import add_labelling_arguments, label_images
from preprocess.wd14 import MODEL_FILE, TAGS_FILE, TagSettings, WD14Tagger, select_tags


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tag",
        help="tag images with a WD14 tagger (ONNX)",
        description=f"{__doc__}\nThe model folder holds {MODEL_FILE} and {TAGS_FILE}.",
    )
    add_source_argument(parser)
    add_output_arguments(parser)
    parser.add_argument(
        "--model", type=Path, required=True, metavar="DIR", help=f"folder with {MODEL_FILE} and {TAGS_FILE}"
    )
    parser.add_argument("--general-threshold", type=float, default=TagSettings.general_threshold)
    parser.add_argument("--character-threshold", type=float, default=TagSettings.character_threshold)
    parser.add_argument("--rating", action="store_true", help="put the most likely rating tag first")
    parser.add_argument("--undesired-tags", default="", metavar="TAGS", help="comma-separated tags never to write")
    parser.add_argument("--keep-underscores", action="store_true", help="write long_hair, not 'long hair'")
    parser.add_argument("--max-tags", type=positive_int, default=None, help="keep at most N character+general tags")
    parser.add_argument(
        "--top", type=int, default=20, help="tags listed in the frequency summary (default: %(default)s)"
    )
    add_labelling_arguments(parser, default_batch=8)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    source = check_source(args.src)
    destination = Destination.from_args(source, args)
    tagger = WD14Tagger(args.model)
    settings = TagSettings(
        general_threshold=args.general_threshold,
        character_threshold=args.character_threshold,
        include_rating=args.rating,
        undesired=frozenset(split_tags(args.undesired_tags)),
        keep_underscores=args.keep_underscores,
        max_tags=args.max_tags,
    )

    def labeller(images: list[Image.Image]) -> list[str]:
        return [join_tags(select_tags(row, tagger.table, settings)) for row in tagger.predict(images)]

    summary = Summary("tag")
    images = list_images(source, recursive=True)
    labels = label_images(
        images, destination, caption_extension(args), args.existing, args.batch_size, labeller, summary
    )
    print(summary.render(args.dry_run))
    print(format_frequencies(tag_frequencies(labels).most_common(args.top), len(labels)))
    return 0
