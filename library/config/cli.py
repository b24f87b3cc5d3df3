"""What trainer entry points call: `--config FILE.toml` plus overrides -> FurnaceConfig, errors as exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .aliases import FLAT_ALIASES
from .errors import ConfigError, show_value
from .keys import FIELD_PATHS
from .loader import load_config
from .schema import FurnaceConfig

CONFIG_FLAGS = ("--config", "--config_file")
HELP_FLAGS = ("-h", "--help")


def split_config_flag(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Take `--config FILE` (or sd-scripts' `--config_file`) out of argv; the rest are overrides."""
    path: str | None = None
    rest: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        name, has_inline, inline = token.partition("=")
        if name not in CONFIG_FLAGS:
            rest.append(token)
            continue
        value = inline if has_inline else next(tokens, None)
        if not value or value.startswith("--"):
            raise ConfigError([f"{name}: needs the path of a .toml file"])
        if path is not None:
            raise ConfigError([f"{name}: given twice ({path}, {value}); pass one config file"])
        path = value
    return path, rest


def format_help(program: str) -> str:
    """Every option with its default and description, generated from the schema."""
    flat_names: dict[str, list[str]] = {}
    for flat, path in FLAT_ALIASES.items():
        flat_names.setdefault(path, []).append(f"--{flat}")
    lines = [
        f"usage: {program} [--config FILE.toml] [--section.key VALUE ...]",
        "",
        "Options (a TOML [section] key, a --section.key flag, or the sd-scripts name in brackets):",
    ]
    for path, info in FIELD_PATHS.items():
        default = "" if info.default_factory or info.default is None else f" = {show_value(info.default)}"
        aliases = f" [{', '.join(flat_names[path])}]" if path in flat_names else ""
        lines.append(f"  --{path}{default}{aliases}\n      {info.description}")
    return "\n".join(lines)


def parse_cli(argv: Sequence[str], program: str | None = None) -> FurnaceConfig:
    """Resolve a trainer's command line. `-h/--help` prints the options and exits 0.

    Raises ConfigError (one line per problem) on a bad file, key or value.
    """
    if any(token in HELP_FLAGS for token in argv):
        sys.stdout.write(format_help(program or Path(sys.argv[0]).name) + "\n")
        raise SystemExit(0)
    path, overrides = split_config_flag(argv)
    return load_config(path, overrides)


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a ConfigError into its message on stderr and exit code 2, without a traceback.

    Usable as `with exit_on_config_error(): ...` or as a decorator on a `main()`.
    """
    try:
        yield
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
