"""What the command-line programs share: the subcommand parser (``python -m preprocess``, ``python -m
library.tools``) with its ``-v``/``-q`` log levels, turning failures into one line and an exit code instead of a
traceback, and a quick exit."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import NoReturn

from tqdm.contrib.logging import logging_redirect_tqdm


def subcommand_parser(program: str, description: str | None, dest: str, commands: Iterable[ModuleType]
                      ) -> argparse.ArgumentParser:
    """``program [-v|-q] COMMAND ...``; each module in ``commands`` adds its sub-parser with ``add_parser``."""
    parser = argparse.ArgumentParser(prog=program, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    subparsers = parser.add_subparsers(dest=dest, required=True, metavar=dest.upper())
    for command in commands:
        command.add_parser(subparsers)
    return parser


def run_subcommand(
    args: argparse.Namespace, user_errors: tuple[type[BaseException], ...], loggers: Sequence[str] = ("library",)
) -> int:
    """Run ``args.run(args)``: a user error exits 2, a failed write (disk full, permissions) 1, Ctrl-C 130."""
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    for name in loggers:
        logging.getLogger(name).setLevel(level)
    try:
        with logging_redirect_tqdm():
            return int(args.run(args))
    except user_errors as error:
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


def exit_without_teardown(code: int) -> NoReturn:
    """``sys.exit(code)`` minus the interpreter's final garbage collection, which walks every object torch,
    diffusers and transformers created (seconds of CPU time after a training run) only to free memory the
    ending process gives back anyway. atexit handlers (log and TensorBoard flushes, worker shutdown) still run."""
    gc.freeze()
    sys.exit(code)
