"""'python -m library.tools <tool>': LoRA and checkpoint tools (inspect, merge, resize, extract, convert, compare)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from library.command_line import exit_without_teardown, run_subcommand, subcommand_parser
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
    return subcommand_parser("python -m library.tools", __doc__, "tool", _TOOLS)


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser().parse_args(argv), (ToolError, LoraFileError, ModelLoadError, PromptFileError))


if __name__ == "__main__":
    exit_without_teardown(main())
