"""Config errors as one line each: where (file or flag), which key, what was expected, what was given."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from .fields import FieldError


class ConfigError(Exception):
    """A config that cannot run. `str()` is the user-facing message, one problem per line."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


_EXPECTATIONS: dict[str, str] = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "multiple_of": "must be a multiple of {multiple_of}",
    "literal_error": "must be one of {expected}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "too_short": "must have {min_length} items",
    "too_long": "must have at most {max_length} items",
    "missing": "is required",
    "extra_forbidden": "is not a known option",
    "json_invalid": "is not valid JSON",
}


def show_value(value: Any) -> str:
    """A value as the user would write it in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _plain_number(value: Any) -> Any:
    """Bounds read as written: `> 0`, not `> 0.0`."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _path_of(loc: tuple[int | str, ...]) -> str:
    """section.field; deeper parts (list items) are shown through the value instead."""
    return ".".join(str(part) for part in loc[:2])


def _describe(error: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dotted path, expectation) pairs of one pydantic error; a cross-field check may hold several."""
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, FieldError):
            return [(".".join([*map(str, loc), path]), message) for path, message in cause.problems]
        return [(_path_of(loc), str(cause if cause is not None else error["msg"]))]
    template = _EXPECTATIONS.get(error["type"])
    bounds = {key: _plain_number(value) for key, value in ctx.items()}
    expectation = template.format(**bounds) if template else error["msg"][:1].lower() + error["msg"][1:]
    return [(_path_of(loc), expectation)]


def validation_messages(
    exc: ValidationError, origins: Mapping[str, tuple[str, str]], fallback_source: str
) -> list[str]:
    """One line per problem. `origins` maps a dotted path to (source, key as written) for values the user set."""
    return error_lines(exc.errors(), origins, fallback_source)


def error_lines(
    errors: Iterable[Mapping[str, Any]], origins: Mapping[str, tuple[str, str]], fallback_source: str
) -> list[str]:
    """:func:`validation_messages` of pydantic's error records (a web request's validation errors have them too)."""
    lines: list[str] = []
    for error in errors:
        for path, expectation in _describe(error):
            source, written = origins.get(path, (fallback_source, path))
            key = path if written == path or source.startswith("--") else f"{path} (from {written})"
            # Section and root checks receive a whole table as input: only a leaf value is worth echoing.
            leaf = error["type"] != "missing" and not isinstance(error["input"], dict)
            got = f" (got {show_value(error['input'])})" if leaf and "(got " not in expectation else ""
            line = f"{source}: {key}: {expectation}{got}"
            if line not in lines:
                lines.append(line)
    return lines

