"""`python -m library.config schema | check FILE [overrides...] | dump FILE [overrides...]`."""

from __future__ import annotations

import argparse
import json
import sys

from .cli import exit_on_config_error
from .loader import dump_toml, load_config
from .schema import FurnaceConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m library.config", description="Furnace run config tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema", help="print the JSON Schema of a run config (the GUI form is built from it)")
    for name, text in (
        ("check", "validate FILE with overrides; print the resolved TOML or the problems (exit 2)"),
        ("dump", "print the fully resolved TOML of FILE with overrides"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("file", help="run config .toml")
        command.add_argument("overrides", nargs=argparse.REMAINDER, help="--section.key VALUE ...")
    return parser


@exit_on_config_error()
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        sys.stdout.write(json.dumps(FurnaceConfig.model_json_schema(), indent=2) + "\n")
        return 0
    config = load_config(args.file, args.overrides)
    sys.stdout.write(dump_toml(config))
    if args.command == "check":
        sys.stderr.write(f"{args.file}: OK\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
