"""Preview prompt files in the sd-scripts syntax users already have.

A text file holds one prompt a line with inline options (``--n`` negative prompt, ``--w``/``--h`` size, ``--s``
steps, ``--l`` CFG scale, ``--g`` guidance of a guidance-distilled model such as FLUX.1-dev, ``--d`` seed, ``--ss``
sampler); ``#`` lines and blank lines are skipped. The structured
``.toml`` / ``.json`` forms sd-scripts reads are accepted too. Options a line leaves out come from the run's
defaults. Every value is checked when the file is read, before any model loads, and a bad one raises
:class:`PromptFileError` naming the file, the line (or key) and what was expected.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from library.config.fields import MAX_SIDE, MIN_SIDE, SIDE_MULTIPLE
from library.config.sections_output import SampleSection
from library.sampling.samplers import canonical_sampler

MAX_STEPS = 1000
MAX_CFG_SCALE = 50.0
MAX_SEED = 2**32 - 1


class PromptFileError(ValueError):
    """A prompt file that cannot be used; ``str()`` is one line: ``<file>:<line>: <problem>``."""


@dataclass(frozen=True)
class SamplePrompt:
    """One preview to render, with every option resolved."""

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = 0
    sampler: str = "ddim"
    guidance_scale: float = 3.5  # the guidance input of a guidance-distilled transformer (FLUX.1-dev)


# Field of SamplePrompt -> (inline option of the text form, key of the structured form).
_OPTIONS: dict[str, tuple[str, str]] = {
    "negative_prompt": ("n", "negative_prompt"),
    "width": ("w", "width"),
    "height": ("h", "height"),
    "steps": ("s", "sample_steps"),
    "cfg_scale": ("l", "scale"),
    "seed": ("d", "seed"),
    "sampler": ("ss", "sample_sampler"),
    "guidance_scale": ("g", "guidance_scale"),
}
_FIELD_BY_FLAG = {flag: name for name, (flag, _) in _OPTIONS.items()}
_FIELD_BY_KEY = {key: name for name, (_, key) in _OPTIONS.items()}
# How each field is spelled in error messages about the text form and the structured form.
_LINE_LABELS = {"prompt": "prompt", **{name: f"--{flag}" for name, (flag, _) in _OPTIONS.items()}}
_KEY_LABELS = {"prompt": "prompt", **{name: key for name, (_, key) in _OPTIONS.items()}}
_OPTION_SPLIT = re.compile(r"(?:^|\s+)--(?=\S)")
_FLAG_AND_VALUE = re.compile(r"(\S+)\s*(.*)", re.DOTALL)


def run_defaults(sample: SampleSection, resolution: tuple[int, int], training_seed: int) -> SamplePrompt:
    """What a run's prompt lines leave out: the sample section's defaults, else the dataset's size and run's seed."""
    width, height = resolution
    return SamplePrompt(prompt="", width=sample.width or width, height=sample.height or height, steps=sample.steps,
                        cfg_scale=sample.cfg_scale, seed=training_seed if sample.seed is None else sample.seed,
                        sampler=sample.sampler, guidance_scale=sample.guidance_scale)


def section_prompts(sample: SampleSection, defaults: SamplePrompt, multiple: int = SIDE_MULTIPLE) -> list[SamplePrompt]:
    """The run's sample prompts: from the ``sample.prompts`` file or the ``sample.prompt_text`` lines (or none);
    sizes must be multiples of ``multiple`` (the model family's ``resolution_multiple``)."""
    if sample.prompts:
        return load_prompts(sample.prompts, defaults, multiple)
    if not sample.prompt_text:
        return []
    prompts = parse_prompt_lines(sample.prompt_text, _checked_defaults(defaults, "sample.prompt_text"),
                                 "sample.prompt_text", multiple)
    if not prompts:
        raise PromptFileError("sample.prompt_text: no prompts found (only blank or # comment lines)")
    return prompts


def load_prompts(path: str | Path, defaults: SamplePrompt | None = None,
                 multiple: int = SIDE_MULTIPLE) -> list[SamplePrompt]:
    """Read a prompt file (text, ``.toml`` or ``.json``); options it leaves out come from ``defaults``, sizes must be
    multiples of ``multiple``."""
    source = Path(path).expanduser()
    base = _checked_defaults(defaults or SamplePrompt(prompt=""), source)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PromptFileError(f"{source}: prompt file not found; check sample.prompts") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PromptFileError(f"{source}: cannot read the prompt file ({error}); save it as UTF-8 text") from None
    suffix = source.suffix.lower()
    if suffix == ".toml":
        prompts = _parse_structured(_toml_entries(text, source), base, source, multiple)
    elif suffix == ".json":
        prompts = _parse_structured(_json_entries(text, source), base, source, multiple)
    else:
        prompts = parse_prompt_lines(text, base, str(source), multiple)
    if not prompts:
        raise PromptFileError(f"{source}: no prompts found (only blank or # comment lines)")
    return prompts


def parse_prompt_lines(text: str, defaults: SamplePrompt, source: str = "<prompts>",
                       multiple: int = SIDE_MULTIPLE) -> list[SamplePrompt]:
    """Parse the one-prompt-a-line text form; ``source`` names the file in error messages."""
    return [_parse_line(line, defaults, f"{source}:{number}", multiple) for number, line in _prompt_lines(text)]


@dataclass(frozen=True)
class CheckedLine:
    """One prompt line checked on its own: its settings resolved, or its problem (without the line's number)."""

    number: int
    text: str
    prompt: SamplePrompt | None = None
    problem: str | None = None


def check_prompt_lines(text: str, defaults: SamplePrompt, multiple: int = SIDE_MULTIPLE) -> list[CheckedLine]:
    """Every prompt line of the text form parsed separately, so an editor can show each line's problem at once."""
    checked = []
    for number, line in _prompt_lines(text):
        try:
            checked.append(CheckedLine(number, line, prompt=_parse_line(line, defaults, "", multiple)))
        except PromptFileError as error:
            checked.append(CheckedLine(number, line, problem=str(error).removeprefix(": ")))
    return checked


def _prompt_lines(text: str) -> list[tuple[int, str]]:
    """The numbered lines that hold a prompt (blank and ``#`` comment lines are skipped)."""
    lines = ((number, raw.strip()) for number, raw in enumerate(text.splitlines(), start=1))
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def _parse_line(line: str, defaults: SamplePrompt, where: str, multiple: int) -> SamplePrompt:
    prompt, *parts = _OPTION_SPLIT.split(line)
    values: dict[str, Any] = {"prompt": prompt}
    for part in parts:
        flag, value = _FLAG_AND_VALUE.fullmatch(part).groups()
        flag = flag.lower()
        name = _FIELD_BY_FLAG.get(flag)
        if name is None:
            known = ", ".join(f"--{option}" for option in _FIELD_BY_FLAG)
            raise PromptFileError(f"{where}: unknown option --{flag}; expected one of {known}")
        if name in values:
            raise PromptFileError(f"{where}: option --{flag} is given twice")
        values[name] = value
    return _resolve(values, defaults, where, _LINE_LABELS, multiple)


def _toml_entries(text: str, source: Path) -> list[tuple[str, Any]]:
    """Entries of ``[[prompt]]`` tables, or sd-scripts' ``[prompt]`` with shared keys and ``[[prompt.subset]]``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PromptFileError(f"{source}: invalid TOML ({error})") from None
    return _entries(document, source)


def _json_entries(text: str, source: Path) -> list[tuple[str, Any]]:
    """A JSON list of prompt objects, or an object shaped like the TOML form."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{source}:{error.lineno}: invalid JSON ({error.msg})") from None
    if isinstance(document, list):
        return [(f"[{index}]", entry) for index, entry in enumerate(document)]
    return _entries(document, source)


def _entries(document: Any, source: Path) -> list[tuple[str, Any]]:
    prompt = document.get("prompt") if isinstance(document, dict) else None
    if isinstance(prompt, list):
        return [(f"prompt[{index}]", entry) for index, entry in enumerate(prompt)]
    if isinstance(prompt, dict) and isinstance(prompt.get("subset"), list):
        shared = {key: value for key, value in prompt.items() if key != "subset"}
        return [(f"prompt.subset[{index}]", _merged(shared, entry)) for index, entry in enumerate(prompt["subset"])]
    raise PromptFileError(
        f"{source}: expected [[prompt]] tables (or [prompt] with [[prompt.subset]] tables), each with a prompt key"
    )


def _merged(shared: dict[str, Any], entry: Any) -> Any:
    return {**shared, **entry} if isinstance(entry, dict) else entry


def _parse_structured(entries: list[tuple[str, Any]], defaults: SamplePrompt, source: Path,
                      multiple: int) -> list[SamplePrompt]:
    prompts = []
    for key_path, entry in entries:
        where = f"{source}: {key_path}"
        if not isinstance(entry, dict):
            raise PromptFileError(f"{where}: expected a table of prompt settings, got {type(entry).__name__}")
        values: dict[str, Any] = {}
        for key, value in entry.items():
            name = "prompt" if key == "prompt" else _FIELD_BY_KEY.get(key)
            if name is None:
                known = ", ".join(("prompt", *_FIELD_BY_KEY))
                raise PromptFileError(f"{where}: unknown key {key!r}; expected one of {known}")
            values[name] = value
        if "prompt" not in values:
            raise PromptFileError(f"{where}: missing the prompt key")
        prompts.append(_resolve(values, defaults, where, _KEY_LABELS, multiple))
    return prompts


def _resolve(values: dict[str, Any], defaults: SamplePrompt, where: str, labels: Mapping[str, str],
             multiple: int) -> SamplePrompt:
    """Convert and check every given value (sizes as multiples of ``multiple``); ``labels`` spell the options the way
    the file does, for errors."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        try:
            checked[name] = _size(value, multiple) if name in _SIZES else _CHECKS[name](value)
        except ValueError as error:
            raise PromptFileError(f"{where}: {labels[name]} {error}") from None
    return replace(defaults, **checked)


def _checked_defaults(defaults: SamplePrompt, source: Path | str) -> SamplePrompt:
    """The caller's defaults go through the same checks, so a bad default is reported before any prompt."""
    for name in _OPTIONS:
        try:
            _CHECKS[name](getattr(defaults, name))
        except ValueError as error:
            raise PromptFileError(f"{source}: default {name} {error}") from None
    return replace(defaults, sampler=canonical_sampler(defaults.sampler))


def _integer(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ValueError(f"must be a whole number, got {value!r}")


def _in_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = _integer(value)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return check


def _size(value: Any, multiple: int = SIDE_MULTIPLE) -> int:
    number = _in_range(MIN_SIDE, MAX_SIDE)(value)
    if number % multiple:
        raise ValueError(f"must be a multiple of {multiple}, got {number}")
    return number


def _scale(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {value!r}") from None
    if not (math.isfinite(number) and 0 <= number <= MAX_CFG_SCALE):
        raise ValueError(f"must be between 0 and {MAX_CFG_SCALE:g}, got {value!r}")
    return number


def _sampler(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a sampler name, got {value!r}")
    return canonical_sampler(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {value!r}")
    return value.strip()


_CHECKS: Mapping[str, Callable[[Any], Any]] = {
    "prompt": _text,
    "negative_prompt": _text,
    "width": _size,
    "height": _size,
    "steps": _in_range(1, MAX_STEPS),
    "cfg_scale": _scale,
    "seed": _in_range(0, MAX_SEED),
    "sampler": _sampler,
    "guidance_scale": _scale,
}
_SIZES = ("width", "height")   # checked against the family's multiple (_resolve); the defaults against SIDE_MULTIPLE
