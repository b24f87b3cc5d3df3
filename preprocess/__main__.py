"""'python -m preprocess <command>': dataset preparation (crop, tag, caption, tags, doctor)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from library.command_line import exit_without_teardown, run_subcommand, subcommand_parser
from preprocess import caption, crop, doctor, tag, tags
from preprocess.common import UsageError

_COMMANDS = (crop, tag, caption, tags, doctor)


def build_parser() -> argparse.ArgumentParser:
    return subcommand_parser("python -m preprocess", __doc__, "command", _COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser().parse_args(argv), (UsageError,), ("preprocess", "library"))


if __name__ == "__main__":
    exit_without_teardown(main())
