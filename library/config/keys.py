"""Turn (key as written, value) pairs from a TOML file or a command line into schema assignments.

Both sources accept the same names: dotted schema paths (`network.dim`) and flat sd-scripts names
(`network_dim`). Unknown names are reported here, with a did-you-mean, so the error speaks the user's spelling.
"""

from __future__ import annotations

import difflib
import logging
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic.fields import FieldInfo

from .aliases import (
    DEPRECATED_KEYS,
    FAMILY_FLAGS,
    FLAT_ALIASES,
    IGNORED_KEYS,
    REFUSED_SWITCHES,
    TRANSFORMS,
    family_from_flags,
)
from .schema import SECTIONS

logger = logging.getLogger(__name__)

FIELD_PATHS: dict[str, FieldInfo] = {
    f"{section}.{name}": info for section, model in SECTIONS.items() for name, info in model.model_fields.items()
}

Kind = Literal["bool", "str", "list", "literal"]


@dataclass(frozen=True)
class Assignment:
    """One schema value and where it came from, so errors can name the file or flag."""

    path: str
    value: Any
    source: str
    written_as: str


def _unique_field_names() -> dict[str, str]:
    """Bare field names that exist in exactly one section, for suggestions like 'dim' -> 'network.dim'."""
    owners: dict[str, list[str]] = {}
    for path in FIELD_PATHS:
        owners.setdefault(path.split(".", 1)[1], []).append(path)
    return {name: paths[0] for name, paths in owners.items() if len(paths) == 1}


def suggest(name: str) -> str | None:
    """The closest known key to a misspelt one, in the form the user should write."""
    section, dot, key = name.partition(".")
    if dot and section in SECTIONS:
        prefix = f"{section}."
        options = {path[len(prefix):]: path for path in FIELD_PATHS if path.startswith(prefix)}
        options |= {flat: path for flat, path in FLAT_ALIASES.items() if path.startswith(prefix)}
        # A key put in the wrong section, e.g. [optimizer] unet_lr -> network.unet_lr, beats a near miss here.
        elsewhere = {**_unique_field_names(), **FLAT_ALIASES}
        exact = elsewhere.get(key)
        return exact if exact and not exact.startswith(prefix) else _closest(key, options)
    if dot:
        return _closest(name, {path: path for path in FIELD_PATHS})
    known = (*SECTIONS, *FLAT_ALIASES, *TRANSFORMS, *FAMILY_FLAGS)
    match = _closest(name, {**_unique_field_names(), **{option: option for option in known}})
    return match if match != name else None


def _closest(key: str, options: dict[str, str]) -> str | None:
    matches = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return options[matches[0]] if matches else None


def schema_path(name: str) -> str:
    """The schema path a key names: itself, or where a flat sd-scripts name or a deprecated spelling points."""
    return FLAT_ALIASES.get(name) or DEPRECATED_KEYS.get(name) or name


def _kind_of_annotation(annotation: Any) -> Kind:
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return "bool"
    if annotation is str:
        return "str"
    if typing.get_origin(annotation) is Literal and all(isinstance(arg, str) for arg in typing.get_args(annotation)):
        return "str"
    return "literal"


def kind_of(name: str) -> Kind | None:
    """How a command-line value for this key is read; None for an unknown key."""
    if name in FAMILY_FLAGS or name in IGNORED_KEYS or name in REFUSED_SWITCHES:
        return "bool"
    if name in TRANSFORMS:
        return TRANSFORMS[name][0]  # type: ignore[return-value]
    path = schema_path(name)
    return _kind_of_annotation(FIELD_PATHS[path].annotation) if path in FIELD_PATHS else None


def unknown_key_message(name: str, source: str, cli: bool) -> str:
    """`file: unknown key 'x' — did you mean 'y'?` or, for a flag, `--x: unknown option — did you mean '--y'?`."""
    match = suggest(name)
    if cli:
        return f"{source}: unknown option" + (f" — did you mean '--{match}'?" if match else "")
    return f"{source}: unknown key '{name}'" + (f" — did you mean '{match}'?" if match else "")


def deprecated_key_message(name: str, source: str, cli: bool) -> str:
    """`file: key 'x' is deprecated; write 'y' (same values)` or, for a flag, `--x is deprecated; write --y ...`."""
    new = DEPRECATED_KEYS[name]
    if cli:
        return f"{source} is deprecated; write --{new} (same values)"
    return f"{source}: key '{name}' is deprecated; write '{new}' (same values)"


def collect(pairs: Iterable[tuple[str, Any, str]], cli: bool) -> tuple[list[Assignment], list[str]]:
    """Map (name, value, source) pairs of one file or one command line onto schema paths.

    Returns the assignments in order and the error lines. A file may set a path once; on a command line
    the last flag wins, as with argparse. sd-scripts family switches (v2, v_parameterization, sdxl)
    are combined into one model.family.
    """
    assignments: list[Assignment] = []
    errors: list[str] = []
    family_flags: dict[str, str] = {}
    for name, value, source in pairs:
        try:
            if name in IGNORED_KEYS:
                continue
            if name in REFUSED_SWITCHES:
                if not isinstance(value, bool):
                    raise ValueError(f"must be true or false (got {value!r})")
                if value:
                    raise ValueError(REFUSED_SWITCHES[name])
                continue
            if name in FAMILY_FLAGS:
                if not isinstance(value, bool):
                    raise ValueError(f"must be true or false (got {value!r})")
                if value:
                    family_flags[name] = source
                continue
            if name in TRANSFORMS:
                mapped = TRANSFORMS[name][1](value)
            elif schema_path(name) in FIELD_PATHS:
                mapped = {schema_path(name): value}
                if name in DEPRECATED_KEYS:
                    logger.warning("%s", deprecated_key_message(name, source, cli))
            else:
                errors.append(unknown_key_message(name, source, cli))
                continue
        except ValueError as exc:
            errors.append(f"{source}: {name}: {exc}")
            continue
        assignments.extend(Assignment(path, item, source, name) for path, item in mapped.items())
    if family_flags:
        names = "/".join(family_flags)
        source = next(iter(family_flags.values()))
        try:
            assignments.append(Assignment("model.family", family_from_flags(set(family_flags)), source, names))
        except ValueError as exc:
            errors.append(f"{source}: {names}: {exc}")
    if not cli:
        errors.extend(_duplicates(assignments))
    return assignments, errors


def _duplicates(assignments: list[Assignment]) -> list[str]:
    seen: dict[str, Assignment] = {}
    errors = []
    for item in assignments:
        first = seen.setdefault(item.path, item)
        if first is not item:
            errors.append(
                f"{item.source}: {item.path}: set twice (as '{first.written_as}' and '{item.written_as}'); keep one"
            )
    return errors
