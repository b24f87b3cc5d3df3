"""'python -m library.tools <tool>': LoRA and checkpoint tools (inspect, merge, resize, extract, convert, compare)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from library.command_line import run_subcommand
from library.models.errors import ModelLoadError
from library.networks import LoraFileError
from library.sampling.prompts import PromptFileError
from library.tools import (
    compare,
    convert,
    extract,
    inspection,
    merge_into,
    merge_loras,
    merge_models,
    resize,
)
from library.tools.common import ToolError

_TOOLS = (inspection, merge_into, merge_loras, resize, extract, merge_models, convert, compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m library.tools", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    subparsers = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    for tool in _TOOLS:
        tool.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser().parse_args(argv), (ToolError, LoraFileError, ModelLoadError, PromptFileError))


if __name__ == "__main__":
    sys.exit(main())
