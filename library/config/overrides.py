"""Command-line overrides: `--section.key value`, `--section.key=value`, flat sd-scripts names, bare booleans."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

from .keys import Kind, kind_of, unknown_key_message

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _is_flag(token: str) -> bool:
    return token.startswith("--") and len(token) > 2


def toml_literal(text: str) -> Any:
    """`1e-4`, `true`, `[1, 2]` as TOML reads them; anything else stays the string given."""
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["value"] if list(parsed) == ["value"] else text


def _convert(kind: Kind, raw: list[str]) -> Any:
    if kind == "list":
        return raw
    text = raw[0]
    if kind == "bool":
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    return text if kind == "str" else toml_literal(text)


def parse_overrides(argv: Sequence[str]) -> tuple[list[tuple[str, Any, str]], list[str]]:
    """(name, value, flag) triples in command-line order, and one error line per bad token."""
    pairs: list[tuple[str, Any, str]] = []
    errors: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not _is_flag(token):
            errors.append(f"{token}: unexpected argument (options look like --section.key VALUE)")
            continue
        name, has_inline, inline = token[2:].partition("=")
        flag = f"--{name}"
        kind = kind_of(name)
        values = [inline] if has_inline else []
        if not has_inline:
            takes = _value_count(kind, argv[i:])
            values, i = list(argv[i:i + takes]), i + takes
        if kind is None:
            errors.append(unknown_key_message(name, flag, cli=True))
        elif not values and kind == "bool":
            pairs.append((name, True, flag))
        elif not values:
            errors.append(f"{flag}: needs a value")
        else:
            pairs.append((name, _convert(kind, values), flag))
    return pairs, errors


def _value_count(kind: Kind | None, rest: Sequence[str]) -> int:
    """How many of the following tokens belong to this flag (a bare boolean flag takes none)."""
    count = 0
    while count < len(rest) and not _is_flag(rest[count]):
        count += 1
    if kind == "list":
        return count
    if kind == "bool" and count and rest[0].lower() not in _TRUE | _FALSE:
        return 0
    return min(count, 1)
