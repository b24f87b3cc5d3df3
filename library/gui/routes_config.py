"""API for the form: schema and trainers, presets, TOML preview / import, validation, folder pickers, dataset
doctor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from dataclasses import asdict

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from library.config import ConfigError, FurnaceConfig, dump_toml
from library.config.sections_data import DatasetSection
from library.data.buckets import BucketParams
from library.models.families import FAMILY_NAMES
from preprocess.report import dataset_report, find_image_folders, format_report

from .datasets import list_datasets
from .forms import (REQUEST_SOURCE, allowed_roots, field_messages, sd_scripts_flags, toml_to_values, validate,
                    values_to_toml)
from .model_family import form_family
from .paths import PathRefused, dataset_location, inside_any, relative_name, within_dataset
from .presets import PresetConflict, PresetNotFound, delete_preset, list_presets, preset_trainer, save_preset
from .prompt_lines import check_form_prompts
from .settings import TRAINERS, GuiSettings

router = APIRouter()
MODEL_SUFFIXES = (".safetensors", ".ckpt")
MAX_PROMPT_FILE = 256 * 1024


REQUEST_BODY = ConfigDict(extra="forbid")
"""Every request body refuses keys it does not know, so a misspelt one is a message, not a silent default."""


class FormBody(BaseModel):
    """The form's values, or a TOML text (import / a run re-launched as written)."""

    model_config = REQUEST_BODY

    values: dict[str, dict[str, Any]] | None = None
    toml: str | None = None

    def text(self) -> str:
        return self.toml if self.toml is not None else values_to_toml(self.values or {})


class PresetBody(BaseModel):
    """The form's values saved as a user preset; `replace` confirms overwriting a saved one of the same name."""

    model_config = REQUEST_BODY

    name: str
    values: dict[str, dict[str, Any]]
    replace: bool = False


class DoctorBody(BaseModel):
    """A dataset folder and the form's dataset settings, checked by the run config's own `dataset` section; the
    form's base model (`model.family`, else detected from `model.pretrained_model_name_or_path`) sets the multiple
    bucket sides are fitted to, as the run fits them."""

    model_config = REQUEST_BODY

    path: str
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    family: Literal[("auto", *FAMILY_NAMES)] = "auto"
    model_path: str = ""

    def bucket_params(self, settings: GuiSettings) -> BucketParams:
        section = self.dataset
        try:
            return BucketParams(resolution=section.resolution, enabled=section.enable_bucket,
                                min_reso=section.min_bucket_reso, max_reso=section.max_bucket_reso,
                                steps=section.bucket_reso_steps, no_upscale=section.bucket_no_upscale,
                                multiple=self._resolution_multiple(settings))
        except ValueError as error:
            raise ConfigError([f"{REQUEST_SOURCE}: dataset: bucket settings: {error}"]) from None

    def _resolution_multiple(self, settings: GuiSettings) -> int:
        """The family's multiple; 1 (no fitting) while the family is not known."""
        family = form_family(self.family, self.model_path, settings)
        return family.resolution_multiple if family else 1


def _settings(request: Request) -> GuiSettings:
    return request.app.state.settings


@router.get("/schema")
def schema() -> dict:
    return FurnaceConfig.model_json_schema()


@router.get("/form")
def form_layout() -> dict:
    """How the form is laid out: each trainer's own sections and essential options, and the sd-scripts flag of each
    option that has one (shown as a hint beside its title)."""
    return {"trainers": {name: asdict(trainer) for name, trainer in TRAINERS.items()}, "flags": sd_scripts_flags()}


@router.get("/presets")
def presets(request: Request) -> list[dict]:
    """The shipped presets then the user's, each as form values and the trainer it is for (or its messages when it
    does not read)."""
    settings = _settings(request)
    return list_presets(settings.configs_dir, settings.runs_root)


@router.post("/presets", status_code=201)
def save_user_preset(body: PresetBody, request: Request) -> dict:
    """Save the form as a user preset (422 for a bad name or unknown key, 409 for a shipped name or an unconfirmed
    overwrite)."""
    settings = _settings(request)
    try:
        save_preset(body.name, body.values, settings.configs_dir, settings.runs_root, body.replace)
    except PresetConflict as error:
        raise HTTPException(409, str(error)) from None
    return {"name": body.name}


@router.delete("/presets/{name}")
def delete_user_preset(name: str, request: Request) -> dict:
    """Delete a user preset; shipped presets are never changed (409)."""
    settings = _settings(request)
    try:
        delete_preset(name, settings.configs_dir, settings.runs_root)
    except PresetConflict as error:
        raise HTTPException(409, str(error)) from None
    except PresetNotFound as error:
        raise HTTPException(404, str(error)) from None
    return {"deleted": name}


@router.post("/toml")
def to_toml(body: FormBody) -> dict:
    """The TOML the form stands for (live preview and export)."""
    return {"toml": body.text()}


@router.post("/import")
def import_toml(body: FormBody) -> dict:
    """A TOML file (sectioned or sd-scripts names) as form values and the trainer it is for; 422 with its messages
    when invalid."""
    values = toml_to_values(body.text(), "imported TOML")
    return {"values": values, "trainer": preset_trainer(values)}


@router.post("/validate")
def validate_form(body: FormBody, request: Request) -> dict:
    """The CLI's messages, each tied to the `section.key` it names; `toml` is the resolved config when valid."""
    try:
        config = validate(body.text(), _settings(request))
    except ConfigError as error:
        return {"ok": False, "messages": field_messages(error), "toml": None}
    return {"ok": True, "messages": [], "toml": dump_toml(config)}


@router.post("/prompts/check")
def check_prompts(body: FormBody, request: Request) -> dict:
    """The prompt editor's lines: each `sample.prompt_text` line checked by the trainers' parser, with its problem or
    the settings it renders with (the form's defaults filled in, sizes checked against the base model's family)."""
    values = body.values if body.toml is None else toml_to_values(body.toml, "TOML")
    return {"lines": check_form_prompts(values or {}, _settings(request))}


@router.get("/prompts/file")
def prompt_file(path: str, request: Request) -> dict:
    """The text of a prompt file inside the configured folders, for the editor to take over (the file is not
    changed: shipped ones are read-only)."""
    settings = _settings(request)
    target = (settings.workdir / path).resolve()
    if not inside_any(target, allowed_roots("sample.prompts", settings)[1]):
        raise PathRefused(f"{path}: a prompt file must be inside the configured folders")
    if target.suffix.lower() in (".toml", ".json"):
        raise PathRefused(f"{path}: the editor takes the one-prompt-a-line form; a {target.suffix} file stays a file")
    if not target.is_file() or target.stat().st_size > MAX_PROMPT_FILE:
        raise PathRefused(f"{path}: not a prompt file (missing, or over {MAX_PROMPT_FILE // 1024} KB)")
    try:
        return {"text": target.read_text(encoding="utf-8-sig")}
    except UnicodeDecodeError:
        raise PathRefused(f"{path}: not UTF-8 text; the editor takes the text form only") from None


@router.get("/roots")
def roots(request: Request) -> dict:
    """What the model and dataset pickers offer: entries of the configured folders, as absolute paths."""
    settings = _settings(request)
    models = [path for root in settings.model_roots if root.is_dir() for path in sorted(root.iterdir())
              if (path / "model_index.json").is_file() or path.suffix in MODEL_SUFFIXES]
    return {
        "models": [str(path) for path in models if inside_any(path, settings.model_roots)],
        "datasets": [str(settings.dataset_roots[item["root"]] / item["path"])
                     for item in list_datasets(settings.dataset_roots)],
        "model_roots": [str(root) for root in settings.model_roots],
        "dataset_roots": [str(root) for root in settings.dataset_roots],
    }



@router.post("/doctor")
def doctor(body: DoctorBody, request: Request) -> dict:
    """The dataset doctor's report for a folder inside the dataset roots (JSON and the CLI's text), read with the
    form's dataset settings as a run would read it. The folder is named as the dataset browser names it (`dataset`:
    its root's number and path), the report's folders and images by their path inside that root, and its text and
    problems relative to the dataset, as the page shows them."""
    settings = _settings(request)
    folder = (settings.workdir / body.path).resolve()
    location = dataset_location(folder, settings.dataset_roots)
    if location is None:
        raise PathRefused(f"{body.path}: must be inside the configured datasets folders")
    if not folder.is_dir():
        raise PathRefused(f"{body.path}: folder not found")
    extension = body.dataset.caption_extension
    report = dataset_report(find_image_folders(folder, extension) or [folder], body.bucket_params(settings),
                            caption_extension=extension, on_bad_image=body.dataset.on_bad_image)
    shown = report.to_dict()
    shown["problems"] = [{**problem, "folder": within_dataset(folder, problem["folder"]),
                          "message": within_dataset(folder, problem["message"])} for problem in shown["problems"]]
    root = settings.dataset_roots[location["root"]]
    for key in ("folders", "near_duplicates"):
        shown[key] = _named_inside(root, folder, shown[key])
    return {"report": shown, "text": within_dataset(folder, format_report(report)), "dataset": location}


def _named_inside(root: Path, folder: Path, value: Any) -> Any:
    """``value`` (a part of the doctor's report) with each path in the dataset ``folder`` (the folders, the images
    each list names) named inside the datasets ``root``; tags and other text stay as they are."""
    if isinstance(value, dict):
        return {key: _named_inside(root, folder, item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_named_inside(root, folder, item) for item in value]
    if isinstance(value, str) and (value == str(folder) or value.startswith(str(folder) + os.sep)):
        return relative_name(root, value)
    return value
