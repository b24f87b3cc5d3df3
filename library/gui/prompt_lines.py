"""The prompt editor's server side: each line of `sample.prompt_text` checked by the trainers' own prompt parser,
with the settings it renders with (the run's defaults filled in) or its problem."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ValidationError

from library.config import FurnaceConfig
from library.config.sections_data import DatasetSection
from library.config.sections_output import SampleSection
from library.config.sections_train import TrainingSection
from library.sampling.prompts import CheckedLine, SamplePrompt, check_prompt_lines, run_defaults

PROMPT_TEXT = "sample.prompt_text"
# The options a prompt line falls back to, per section.
_DEFAULT_KEYS = {
    "sample": ("width", "height", "steps", "cfg_scale", "seed", "sampler", "guidance_scale"),
    "dataset": ("resolution",),
    "training": ("seed",),
}


def _section(model: type[BaseModel], name: str, values: dict[str, Any]) -> Any:
    """The section built from the defaults-giving options the form set; the schema's defaults when one is invalid
    (the form shows that option's own message)."""
    given = {key: value for key, value in (values.get(name) or {}).items() if key in _DEFAULT_KEYS[name]}
    try:
        return model.model_validate(given)
    except ValidationError:
        return model()


def form_defaults(values: dict[str, Any]) -> SamplePrompt:
    """What the form's prompt lines leave out, read from the form's values as the run will read them."""
    sample = _section(SampleSection, "sample", values)
    dataset = _section(DatasetSection, "dataset", values)
    training = _section(TrainingSection, "training", values)
    return run_defaults(sample, dataset.resolution, training.seed)


def line_view(line: CheckedLine) -> dict[str, Any]:
    """One line as the editor shows it: its number, and its problem or its resolved settings."""
    settings = None if line.prompt is None else asdict(line.prompt)
    return {"line": line.number, "text": line.text, "problem": line.problem, "settings": settings}


def check_form_prompts(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every prompt line of the form's `sample.prompt_text`, checked on its own."""
    text = (values.get("sample") or {}).get("prompt_text") or ""
    return [line_view(line) for line in check_prompt_lines(str(text), form_defaults(values))]


def prompt_problems(config: FurnaceConfig, source: str) -> list[str]:
    """The bad lines of a valid config's `sample.prompt_text`, one message each naming its line."""
    sample = config.sample
    if not sample.prompt_text:
        return []
    defaults = run_defaults(sample, config.dataset.resolution, config.training.seed)
    checked = check_prompt_lines(sample.prompt_text, defaults)
    if not checked:
        return [f"{source}: {PROMPT_TEXT}: no prompts found (only blank or # comment lines)"]
    return [f"{source}: {PROMPT_TEXT}: line {line.number}: {line.problem}" for line in checked if line.problem]
