"""The prompt editor's server side: each line of `sample.prompt_text` checked by the trainers' own prompt parser,
with the settings it renders with (the run's defaults filled in) or its problem. Sizes are checked against the base
model's family (FLUX.1 sides are multiples of 16, Stable Diffusion's of 8), as the run checks them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ValidationError

from library.config import FurnaceConfig
from library.config.fields import SIDE_MULTIPLE
from library.config.sections_data import DatasetSection
from library.config.sections_output import SampleSection
from library.config.sections_train import TrainingSection
from library.sampling.prompts import CheckedLine, SamplePrompt, check_prompt_lines, run_defaults

from .model_family import form_family
from .settings import GuiSettings

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


def size_multiple(family: str | None, model: str | None, settings: GuiSettings) -> int:
    """What a preview's sides must be multiples of: the form's base model family's, Stable Diffusion's while it is
    not known."""
    known = form_family(family, model, settings)
    return known.resolution_multiple if known else SIDE_MULTIPLE


def line_view(line: CheckedLine) -> dict[str, Any]:
    """One line as the editor shows it: its number, and its problem or its resolved settings."""
    settings = None if line.prompt is None else asdict(line.prompt)
    return {"line": line.number, "text": line.text, "problem": line.problem, "settings": settings}


def check_form_prompts(values: dict[str, Any], settings: GuiSettings) -> list[dict[str, Any]]:
    """Every prompt line of the form's `sample.prompt_text`, checked on its own."""
    text = (values.get("sample") or {}).get("prompt_text") or ""
    model = values.get("model") or {}
    multiple = size_multiple(model.get("family"), model.get("pretrained_model_name_or_path"), settings)
    return [line_view(line) for line in check_prompt_lines(str(text), form_defaults(values), multiple)]


def prompt_problems(config: FurnaceConfig, source: str, settings: GuiSettings) -> list[str]:
    """The bad lines of a valid config's `sample.prompt_text`, one message each naming its line."""
    sample = config.sample
    if not sample.prompt_text:
        return []
    defaults = run_defaults(sample, config.dataset.resolution, config.training.seed)
    multiple = size_multiple(config.model.family, config.model.pretrained_model_name_or_path, settings)
    checked = check_prompt_lines(sample.prompt_text, defaults, multiple)
    if not checked:
        return [f"{source}: {PROMPT_TEXT}: no prompts found (only blank or # comment lines)"]
    return [f"{source}: {PROMPT_TEXT}: line {line.number}: {line.problem}" for line in checked if line.problem]
