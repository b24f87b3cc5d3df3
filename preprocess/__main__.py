"""'python -m preprocess <command>': dataset preparation (crop, tag, caption, tags, doctor)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from library.command_line import run_subcommand
from preprocess import caption, crop, doctor, tag, tags
from preprocess.common import UsageError

_COMMANDS = (crop, tag, caption, tags, doctor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m preprocess", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser().parse_args(argv), (UsageError,), ("preprocess", "library"))


if __name__ == "__main__":
    sys.exit(main())
