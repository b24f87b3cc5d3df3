"""The preprocess page's server side: the `python -m preprocess` commands, described from their own argument parser,
with every path argument confined to the configured folders before a job (jobs.py) runs one."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from preprocess.__main__ import build_parser

from .paths import PathRefused, dataset_location, inside_any
from .settings import DATASETS_ROOT_FLAG, MODELS_ROOT_FLAG, GuiSettings


class CommandRefused(ValueError):
    """Not a preprocess command, or arguments its parser rejects; the message is the parser's."""


MODEL_DESTS = ("model",)   # path options that name a tagger / captioner model rather than a dataset folder


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _describe(action: argparse.Action) -> dict[str, Any]:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        kind = "flag"
    else:
        kind = "multi" if action.nargs not in (None, 1) else "value"
    return {
        "flag": action.option_strings[-1] if action.option_strings else None,
        "dest": action.dest,
        "kind": kind,
        "nargs": action.nargs,
        "help": (action.help or "").replace("%(default)s", str(action.default)),
        "default": action.default if isinstance(action.default, (str, int, float, bool)) else None,
        "choices": list(action.choices) if action.choices else None,
        "required": bool(action.required),
        "metavar": action.metavar if isinstance(action.metavar, str) else None,
        # an option taking a fixed group of values (`--replace OLD NEW`) gets one input per value on the page
        "parts": list(action.metavar) if isinstance(action.metavar, tuple) else None,
        "path": action.type is Path,
        "repeat": isinstance(action, argparse._AppendAction),
    }


def describe_commands() -> dict[str, dict[str, Any]]:
    """Each command's description and options, as the form on the preprocess page shows them."""
    return {
        name: {
            "description": parser.description or "",
            "options": [_describe(action) for action in parser._actions if action.dest != "help"],
        }
        for name, parser in _subcommands().items()
    }


def _parse(command: str, argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = _subcommands().get(command)
    if parser is None:
        raise CommandRefused(f"{command}: not a preprocess command ({', '.join(_subcommands())})")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser, parser.parse_args(list(argv))
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        raise CommandRefused(lines[-1] if lines else f"{command}: invalid arguments") from None


def check_arguments(command: str, argv: Sequence[str], settings: GuiSettings) -> dict[str, Any] | None:
    """Refuse unknown options and any path outside the dataset folders (model folders for `--model`); returns where
    the command's result lies (`result_location`)."""
    parser, namespace = _parse(command, argv)
    for action in parser._actions:
        if action.type is not Path or getattr(namespace, action.dest, None) is None:
            continue
        value = getattr(namespace, action.dest)
        model = action.dest in MODEL_DESTS
        roots = settings.model_roots if model else settings.dataset_roots
        for path in value if isinstance(value, list) else [value]:
            if not inside_any(settings.workdir / path, roots):
                raise PathRefused(f"{command} {_name(action)}: {path} is outside {_allow_hint(roots, model)}")
    return result_location(namespace, settings)


def result_location(namespace: argparse.Namespace, settings: GuiSettings) -> dict[str, Any] | None:
    """The dataset folder a command leaves its result in, `--out` or else its source, as the dataset browser names
    it (`root`: the datasets root's number, `path` inside it); None for a command without a source folder."""
    folder = getattr(namespace, "out", None) or getattr(namespace, "src", None)
    if not isinstance(folder, Path):
        return None
    return dataset_location(settings.workdir / folder, settings.dataset_roots)


def _name(action: argparse.Action) -> str:
    return action.metavar if isinstance(action.metavar, str) else action.dest


def _allow_hint(roots: Sequence[Path], model: bool) -> str:
    """The allowed folders and how to allow another: the run_gui.sh flag, repeated to keep the current ones."""
    flag = MODELS_ROOT_FLAG if model else DATASETS_ROOT_FLAG
    current = " ".join(f"{flag} '{root}'" for root in roots)
    return (f"the allowed folders ({', '.join(str(root) for root in roots)}); move it into one, or restart "
            f"run_gui.sh with {flag} FOLDER to allow another (repeat the flag to keep these: {current})")
