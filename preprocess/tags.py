"""'tags': bulk-edit tag captions and list tag frequencies.

Edits run in this order on every caption that passes '--filter': replace, remove, dedupe,
sort, add, prepend (so a prepended trigger word stays first even with '--sort').
Regular expressions must match a whole tag to remove it; '--replace-regex' substitutes
inside tags and drops a tag that becomes empty. Images without a caption count as having none.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from library.data.captions import CaptionError, caption_path, join_tags, read_caption_for, split_tags, tag_frequencies
from library.data.images import list_images
from preprocess.common import (
    Destination,
    Summary,
    UsageError,
    add_output_arguments,
    add_source_argument,
    caption_extension,
    check_source,
    format_frequencies,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tags",
        help="bulk-edit tags, list tag frequencies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source_argument(parser)
    add_output_arguments(parser, required=False)
    edits = parser.add_argument_group("edits (repeatable)")
    edits.add_argument("--replace", nargs=2, action="append", default=[], metavar=("OLD", "NEW"))
    edits.add_argument("--replace-regex", nargs=2, action="append", default=[], metavar=("PATTERN", "REPL"))
    edits.add_argument("--remove", action="append", default=[], metavar="TAG")
    edits.add_argument("--remove-regex", action="append", default=[], metavar="PATTERN")
    edits.add_argument("--dedupe", action="store_true", help="drop repeated tags, keeping the first")
    edits.add_argument("--sort", action="store_true", help="sort tags alphabetically")
    edits.add_argument("--add", action="append", default=[], metavar="TAG", help="append TAG when missing")
    edits.add_argument(
        "--prepend", action="append", default=[], metavar="TAG", help="put TAG first (e.g. a trigger word)"
    )
    parser.add_argument(
        "--filter", action="append", default=[], metavar="TAG", help="only captions having TAG (all given)"
    )
    parser.add_argument("--list", action="store_true", help="print tag frequencies (after edits)")
    parser.add_argument("--top", type=int, default=50, help="tags shown by --list (default: %(default)s)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class TagEdits:
    replace: dict[str, str] = field(default_factory=dict)
    replace_regex: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    remove: frozenset[str] = frozenset()
    remove_regex: list[re.Pattern[str]] = field(default_factory=list)
    dedupe: bool = False
    sort: bool = False
    add: list[str] = field(default_factory=list)
    prepend: list[str] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TagEdits:
        return cls(
            replace=dict(args.replace),
            replace_regex=[(_compile(pattern), repl) for pattern, repl in args.replace_regex],
            remove=frozenset(args.remove),
            remove_regex=[_compile(pattern) for pattern in args.remove_regex],
            dedupe=args.dedupe,
            sort=args.sort,
            add=args.add,
            prepend=args.prepend,
        )

    def __bool__(self) -> bool:
        return any(
            (
                self.replace,
                self.replace_regex,
                self.remove,
                self.remove_regex,
                self.dedupe,
                self.sort,
                self.add,
                self.prepend,
            )
        )

    def apply(self, tags: list[str]) -> list[str]:
        tags = [self.replace.get(tag, tag) for tag in tags]
        for pattern, repl in self.replace_regex:
            tags = [pattern.sub(repl, tag).strip() for tag in tags]
        tags = [
            tag
            for tag in tags
            if tag and tag not in self.remove and not any(p.fullmatch(tag) for p in self.remove_regex)
        ]
        if self.dedupe:
            tags = list(dict.fromkeys(tags))
        if self.sort:
            tags = sorted(tags)
        tags += [tag for tag in self.add if tag not in tags]
        if self.prepend:
            tags = self.prepend + [tag for tag in tags if tag not in self.prepend]
        return tags


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise UsageError(f"bad regular expression {pattern!r}: {error}") from None


def describe_change(before: list[str], after: list[str]) -> str:
    """``-removed +added`` for a changed tag list; otherwise says duplicates went or the order changed."""
    removed = [tag for tag in before if tag not in after]
    added = [tag for tag in after if tag not in before]
    if not removed and not added:
        return "(duplicates removed)" if len(after) < len(before) else "(reordered)"
    return " ".join([f"-{tag!r}" for tag in removed] + [f"+{tag!r}" for tag in added])


@dataclass(frozen=True)
class CaptionChange:
    """One image's tags before and after the edits (equal when nothing changes or the filter does not match)."""

    image: Path
    caption_file: Path
    before: list[str]
    after: list[str]
    matches: bool


def caption_changes(
    source: Path, extension: str, edits: TagEdits, filters: Sequence[str], summary: Summary
) -> Iterator[CaptionChange]:
    """The edits applied to every image's caption under ``source`` (sub-folders included) that has all of
    ``filters``; unreadable captions are recorded in ``summary`` and passed over. Nothing is written: the caller
    decides where the result goes (this command's output folder, the web front-end's dataset browser)."""
    for image in list_images(source, recursive=True):
        try:
            caption = read_caption_for(image, extension)
        except CaptionError as error:
            summary.problem(error.path, error.reason)
            continue
        before = split_tags(caption or "")
        matches = all(tag in before for tag in filters)
        after = edits.apply(before) if matches else before
        yield CaptionChange(image, caption_path(image, extension), before, after, matches)


def run(args: argparse.Namespace) -> int:
    source = check_source(args.src)
    edits = TagEdits.from_args(args)
    if edits and not (args.out or args.in_place):
        raise UsageError("edits need --out DST (new dataset folder) or --in-place")
    if not edits and not args.list:
        raise UsageError("nothing to do: give an edit (e.g. --prepend TAG) or --list")
    destination = Destination.from_args(source, args) if edits else None
    extension = caption_extension(args)
    summary = Summary("tags")
    results: list[str] = []
    for change in caption_changes(source, extension, edits, args.filter, summary):
        image, before, after = change.image, change.before, change.after
        if change.matches:
            results.append(join_tags(after))
        summary.add("captions matching filter" if change.matches else "captions not matching filter")
        if destination is None:
            continue
        if before == after:
            destination.copy_image_with_caption(image, extension)
            continue
        print(f"{change.caption_file.relative_to(source)}: {describe_change(before, after)}")
        destination.copy_file(image, destination.path_for(image))
        destination.write_text(destination.path_for(change.caption_file), join_tags(after))
        summary.add("captions changed")
    print(summary.render(args.dry_run))
    if args.list:
        print(format_frequencies(tag_frequencies(results).most_common(args.top), len(results)))
    return 0
