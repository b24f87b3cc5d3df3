"""'python -m library.tools <tool>': LoRA and checkpoint tools (inspect, merge, resize, extract, convert, compare)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from library.command_line import exit_without_teardown, run_subcommand, subcommand_parser
from library.models.errors import ModelLoadError
from library.networks import LoraFileError
from library.networks.embedding_file import EmbeddingFileError
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
    return subcommand_parser("python -m library.tools", __doc__, "tool", _TOOLS)


def main(argv: Sequence[str] | None = None) -> int:
    # No tool uses bitsandbytes, but diffusers imports it whenever it is installed (from its model classes, which
    # the checkpoint tools instantiate), and it then warns about CPU kernels for 4-bit layers on every start.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    return run_subcommand(build_parser().parse_args(argv), (ToolError, LoraFileError, EmbeddingFileError, ModelLoadError, PromptFileError))


if __name__ == "__main__":
    exit_without_teardown(main())
