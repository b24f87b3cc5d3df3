"""The training form's server side: form values <-> TOML, validation with the CLI's messages, roots.

The page sends `{section: {key: value}}` with only the options the user set; the TOML built from it is exactly what
the trainer reads, so the preview, the export and the run agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from library.config import ConfigError, FurnaceConfig, dump_toml, loads_config
from library.config.aliases import FLAT_ALIASES
from library.config.errors import error_lines
from library.config.fields import OptionalPath
from library.config.keys import collect
from library.config.loader import parse_toml
from library.config.schema import SECTIONS

from .paths import inside_any
from .prompt_lines import prompt_problems
from .settings import GuiSettings

FORM_SOURCE = "form"
REQUEST_SOURCE = "request"
READ_AT_START = ("dataset.train_data_dir", "dataset.reg_data_dir", "dataset.validation_dir", "dataset.dataset_config")
_KEY_PATH = re.compile(r"^[^:]*: (?P<path>[a-z_]+\.[a-z_0-9]+)")


def values_to_toml(values: dict[str, Any]) -> str:
    """Form values (None / '' = unset) as sectioned TOML."""
    cleaned = {
        section: {key: value for key, value in (options or {}).items() if value is not None and value != ""}
        for section, options in values.items()
    }
    return tomli_w.dumps({section: options for section, options in cleaned.items() if options})


def toml_to_values(text: str, source: str) -> dict[str, Any]:
    """A TOML (sectioned or sd-scripts flat names) as form values, keys checked; values are checked by `validate`.

    An imported file may be partial (e.g. no model yet), so only unknown keys and broken TOML are errors here.
    """
    document = parse_toml(text, source)
    pairs: list[tuple[str, Any, str]] = []
    for key, value in document.items():
        if key in SECTIONS and isinstance(value, dict):
            pairs.extend((f"{key}.{sub}", item, source) for sub, item in value.items())
        else:
            pairs.append((key, value, source))
    assignments, errors = collect(pairs, cli=False)
    if errors:
        raise ConfigError(errors)
    values: dict[str, Any] = {}
    for assignment in assignments:
        section, _, key = assignment.path.partition(".")
        values.setdefault(section, {})[key] = assignment.value
    return values


def request_problems(errors: Iterable[Mapping[str, Any]]) -> ConfigError:
    """A request's validation errors as the form's messages, ``request: <key>: <expectation> (got <value>)``."""
    records = []
    for error in errors:
        loc = () if error["type"] == "json_invalid" else tuple(error["loc"])[1:]  # not "body" / "query"
        records.append({**error, "loc": loc or ("body",)})
    return ConfigError(error_lines(records, {}, REQUEST_SOURCE))


def field_messages(error: ConfigError) -> list[dict[str, str | None]]:
    """Each message with the `section.key` it names (None for a message about the whole file)."""
    found = [_KEY_PATH.match(message) for message in error.messages]
    return [{"path": match["path"] if match else None, "message": message}
            for match, message in zip(found, error.messages)]


def sd_scripts_flags() -> dict[str, str]:
    """`section.key` -> the sd-scripts command-line flag that sets it (the first alias when there are several)."""
    flags: dict[str, str] = {}
    for flat, path in FLAT_ALIASES.items():
        flags.setdefault(path, f"--{flat}")
    return flags


def path_options() -> list[str]:
    """Every option that names a file or folder: the base model and the schema's path-typed fields."""
    found = ["model.pretrained_model_name_or_path"]
    for section, info in FurnaceConfig.model_fields.items():
        found += [f"{section}.{key}" for key, field in info.annotation.model_fields.items()
                  if field.rebuild_annotation() == OptionalPath]
    return found


def allowed_roots(path: str, settings: GuiSettings) -> tuple[str, list[Path]]:
    """Which configured folders an option may point into (the most specific kind of folder first)."""
    if path.startswith("model."):
        return "models", settings.model_roots
    if path.startswith("dataset.") or path == "dreambooth.class_data_dir":
        return "datasets", settings.dataset_roots
    if path == "logging.log_dir":
        return "runs", [settings.runs_root]
    every = [*settings.model_roots, *settings.dataset_roots, settings.runs_root, settings.configs_dir]
    return "configured", every


def check_roots(config: FurnaceConfig, settings: GuiSettings) -> list[str]:
    """Every path option must lie in the configured folders (relative paths start at the workdir)."""
    problems: list[str] = []
    for path in path_options():
        section, key = path.split(".")
        value = getattr(getattr(config, section), key)
        if not value or (path == "training.resume" and value == "latest"):
            continue
        what, roots = allowed_roots(path, settings)
        if not inside_any(settings.workdir / str(value), roots):
            folders = ", ".join(str(root) for root in roots)
            problems.append(f"{FORM_SOURCE}: {path}: must be inside the {what} folders ({folders})")
    return problems


def missing_inputs(text: str, settings: GuiSettings) -> list[str]:
    """The dataset folders and files a run reads first must exist: without them it is sure to fail. Read from the
    TOML itself, so a missing folder is reported beside the schema's own messages. (A path outside the allowed
    folders has its message from `check_roots`.)"""
    try:
        values = toml_to_values(text, FORM_SOURCE)
    except ConfigError:
        return []   # validation reports the broken TOML
    problems: list[str] = []
    for path in READ_AT_START:
        section, key = path.split(".")
        value = values.get(section, {}).get(key)
        target = settings.workdir / str(value)
        if isinstance(value, str) and value and inside_any(target, allowed_roots(path, settings)[1]) \
                and not target.exists():
            problems.append(f"{FORM_SOURCE}: {path}: {value} not found; pick one inside the datasets folders")
    return problems


def validate(text: str, settings: GuiSettings, overrides: tuple[str, ...] = ()) -> FurnaceConfig:
    """The CLI's validation, the folder confinement, the datasets' presence and the prompt lines; raises ConfigError
    with every message."""
    missing = missing_inputs(text, settings)
    try:
        config = loads_config(text, FORM_SOURCE, overrides)
    except ConfigError as error:
        raise ConfigError([*error.messages, *missing]) from None
    problems = check_roots(config, settings) + missing + prompt_problems(config, FORM_SOURCE, settings)
    if problems:
        raise ConfigError(problems)
    return config


def run_config_text(text: str, settings: GuiSettings, output_dir: Path) -> str:
    """The resolved TOML a queued run trains with: validated, its output forced into the run's folder."""
    return dump_toml(validate(text, settings, ("--output.output_dir", str(output_dir))))
