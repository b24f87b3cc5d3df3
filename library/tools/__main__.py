"""'python -m library.tools <tool>': LoRA and checkpoint tools (inspect, merge, resize, extract, convert, compare)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

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
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("library").setLevel(level)
    try:
        with logging_redirect_tqdm():
            return int(args.run(args))
    except (ToolError, LoraFileError, ModelLoadError, PromptFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`); nothing left to report to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
