"""Load a run config: TOML file (sectioned or flat sd-scripts names) + command-line overrides -> FurnaceConfig."""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from library.atomic_files import write_text_atomic

from .errors import ConfigError, show_value, validation_messages
from .keys import Assignment, collect, schema_path
from .overrides import parse_overrides
from .schema import SECTIONS, FurnaceConfig

logger = logging.getLogger(__name__)

_POSITION = re.compile(r"^(?P<what>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """A TOML document (a leading byte-order mark ignored); one line naming ``source`` and the position when broken."""
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        found = _POSITION.match(str(exc))
        where = f"line {found['line']}, column {found['col']}: " if found else ""
        what = found["what"] if found else str(exc)
        raise ConfigError([f"{source}: {where}invalid TOML: {what}"]) from None


def read_toml_text(path: Path, kind: str = "config file", expected: str = "a .toml config file") -> str:
    """The text of a TOML file a user wrote (``kind`` names it in errors, ``expected`` says what it should be).

    UTF-8 with or without a byte-order mark: editors on Windows add one, and TOML itself would refuse it.
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([f"{path}: {kind} not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a folder, expected {expected}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not a UTF-8 text file (byte {error.start}); save it as UTF-8"]) from None


def _document_pairs(document: dict[str, Any], source: str) -> tuple[list[tuple[str, Any, str]], list[str]]:
    """Flatten `[section] key = v` to ('section.key', v); flat top-level names pass through as written."""
    pairs: list[tuple[str, Any, str]] = []
    errors: list[str] = []
    for key, value in document.items():
        if key in SECTIONS and isinstance(value, dict):
            pairs.extend((f"{key}.{sub}", item, source) for sub, item in value.items())
        elif key in SECTIONS and schema_path(key) == key:  # `deepspeed = true` (flat switch) passes as a key
            errors.append(f"{source}: {key}: must be a [{key}] table of options (got {show_value(value)})")
        else:
            pairs.append((key, value, source))
    return pairs, errors


def _dataset_toml_hint(document: dict[str, Any], source: str) -> list[str]:
    if "datasets" in document or "general" in document:
        hint = f"set dataset.dataset_config = '{source}' in a run config instead"
        return [f"{source}: this looks like an sd-scripts dataset TOML: {hint}"]
    return []


def _nest(assignments: list[Assignment]) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """Later assignments win; `origins` remembers who set each path, for error messages."""
    raw: dict[str, Any] = {}
    origins: dict[str, tuple[str, str]] = {}
    for item in assignments:
        section, _, key = item.path.partition(".")
        raw.setdefault(section, {})[key] = item.value
        origins[item.path] = (item.source, item.written_as)
        if isinstance(item.value, dict):
            origins.update({f"{item.path}.{sub}": (item.source, item.written_as) for sub in item.value})
    return raw, origins


def loads_config(text: str, source: str = "<config>", overrides: Sequence[str] = ()) -> FurnaceConfig:
    """Validate TOML text (named `source` in errors) with command-line overrides applied on top."""
    document = parse_toml(text, source)
    pairs, shape_errors = _document_pairs(document, source)
    assignments, errors = collect(pairs, cli=False)
    errors = _dataset_toml_hint(document, source) + shape_errors + errors
    return _finish(assignments, errors, overrides, source)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> FurnaceConfig:
    """Read a run TOML (or only overrides when `path` is None), apply overrides, validate.

    Raises ConfigError with one line per problem, naming the file or the flag.
    """
    if path is None:
        return _finish([], [], overrides, "command line")
    return loads_config(read_toml_text(Path(path)), str(path), overrides)


def _finish(
    assignments: list[Assignment], errors: list[str], overrides: Sequence[str], fallback: str
) -> FurnaceConfig:
    pairs, override_errors = parse_overrides(overrides)
    override_assignments, collect_errors = collect(pairs, cli=True)
    errors = errors + override_errors + collect_errors
    raw, origins = _nest(assignments + override_assignments)
    try:
        config = FurnaceConfig.model_validate(raw)
    except ValidationError as exc:
        errors += validation_messages(exc, origins, fallback)
    if errors:
        raise ConfigError(errors)
    logger.debug("config %s resolved with %d override(s)", fallback, len(override_assignments))
    return config


def dump_toml(config: FurnaceConfig) -> str:
    """The fully resolved config as sectioned TOML (unset options omitted); loads back to an equal config."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def save_resolved(config: FurnaceConfig, path: str | Path) -> Path:
    """Write the resolved config atomically, e.g. as output/<run>/config.toml."""
    return write_text_atomic(path, dump_toml(config))
