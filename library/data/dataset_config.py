"""Dataset definitions: sd-scripts dataset TOML files and ``N_name`` repeat folders, resolved to blueprints.

sd-scripts users already have dataset files (``[general]``, ``[[datasets]]``, ``[[datasets.subsets]]``); they
must run unchanged. A subset key falls back to its dataset, then to ``[general]``, then to the run config's
``dataset`` section. The folder convention (``train_dir/10_sks dog/`` = 10 repeats of class tokens ``sks dog``)
resolves to the same blueprint, so the rest of the pipeline sees one shape.

Options shared with the run config's ``dataset`` section take their type and bounds from that section, so a
value the run config refuses is refused in a dataset file too, with the file and key named.
"""

from __future__ import annotations

import difflib
import logging
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from library.config.errors import ConfigError, show_value
from library.config.fields import MAX_EPOCHS
from library.config.loader import read_toml_text
from library.config.sections_data import DatasetSection
from library.config.sections_dreambooth import DreamBoothSection
from library.data.images import list_images
from library.data.masks import mask_folder_for
from library.data.repeat_folders import ZERO_REPEATS, RepeatFolderError, parse_repeat_folder

logger = logging.getLogger(__name__)


def _section_type(name: str) -> Any:
    """The run config's type for ``dataset.<name>``, bounds and parsing included."""
    info = DatasetSection.model_fields[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


_SHARED_SUBSET_OPTIONS = (
    "caption_extension", "shuffle_caption", "keep_tokens", "keep_tokens_separator", "caption_prefix",
    "caption_suffix", "caption_dropout_rate", "caption_tag_dropout_rate", "flip_aug", "color_aug", "random_crop",
    "num_repeats",
)
_SHARED_DATASET_OPTIONS = (
    "resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
    "bucket_no_upscale",
)
# Subset options, allowed in [general], [[datasets]] and [[datasets.subsets]] (the most specific wins).
_SUBSET_OPTION_TYPES: dict[str, Any] = {
    **{name: _section_type(name) for name in _SHARED_SUBSET_OPTIONS},
    "caption_dropout_every_n_epochs": Annotated[int, Field(ge=0, le=MAX_EPOCHS)],
    "class_tokens": str,
    "is_reg": bool,
    "alpha_mask": bool,  # sd-scripts: this subset's loss is weighted by its images' alpha channels
    "conditioning_data_dir": str,  # sd-scripts: this subset's mask folder (with dataset.masked_loss)
}
# Dataset-level options (also allowed in [general]).
_DATASET_OPTION_TYPES: dict[str, Any] = {name: _section_type(name) for name in _SHARED_DATASET_OPTIONS}


def _section_model(name: str, options: dict[str, Any]) -> type[BaseModel]:
    annotations = {key: (kind | None, Field(default=None)) for key, kind in options.items()}
    return create_model(name, __config__=ConfigDict(extra="forbid"), **annotations)


_Subset = _section_model("subset", {**_SUBSET_OPTION_TYPES, "image_dir": str})
_DatasetBase = _section_model("dataset", {**_SUBSET_OPTION_TYPES, **_DATASET_OPTION_TYPES})
_General = _section_model("general", {**_SUBSET_OPTION_TYPES, **_DATASET_OPTION_TYPES})


class _Dataset(_DatasetBase):  # type: ignore[misc, valid-type]
    subsets: list[_Subset] = Field(default_factory=list)  # type: ignore[valid-type]


class _DatasetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    general: _General = Field(default_factory=_General)  # type: ignore[valid-type]
    datasets: list[_Dataset] = Field(default_factory=list)


@dataclass(frozen=True)
class SubsetBlueprint:
    """One folder of images with its repeat count, class tokens and caption/augmentation options."""

    image_dir: Path
    num_repeats: int = 1
    class_tokens: str | None = None
    is_reg: bool = False
    caption_extension: str = ".txt"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_prefix: str = ""
    caption_suffix: str = ""
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    alpha_mask: bool = False  # mask source: the image's alpha channel (when no mask_dir)
    mask_dir: Path | None = None  # mask source: a same-stem file in this folder

    @property
    def masked(self) -> bool:
        """True when this subset's loss is weighted by per-image masks."""
        return self.alpha_mask or self.mask_dir is not None

    @property
    def randomises_captions(self) -> bool:
        """True when the same image can get a different caption from one step to the next."""
        return bool(
            self.shuffle_caption
            or self.caption_dropout_rate
            or self.caption_tag_dropout_rate
            or self.caption_dropout_every_n_epochs
        )


@dataclass(frozen=True)
class DatasetBlueprint:
    """A group of subsets trained at one resolution / bucket setting and batch size."""

    subsets: tuple[SubsetBlueprint, ...]
    resolution: tuple[int, int] = (512, 512)
    batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False


# sd-scripts options Furnace does not implement: named explicitly so a user's file fails with a clear reason.
_UNSUPPORTED_SD_SCRIPTS_KEYS = frozenset(
    {
        "metadata_file", "face_crop_aug_range", "token_warmup_min", "token_warmup_step", "secondary_separator",
        "enable_wildcard", "cache_info", "caption_separator",
        "validation_seed", "validation_split", "system_prompt", "resize_interpolation", "custom_attributes",
        "network_multiplier",
    }
)
_KNOWN_KEYS = sorted({*_SUBSET_OPTION_TYPES, *_DATASET_OPTION_TYPES, "image_dir", "subsets", "general", "datasets"})


def _where(loc: tuple[int | str, ...]) -> str:
    """``("datasets", 0, "subsets", 1, "num_repeats")`` -> ``datasets[0].subsets[1].num_repeats``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problem_lines(error: ValidationError, path: Path) -> list[str]:
    """One line per problem: unknown keys with a did-you-mean, refused sd-scripts keys, bad values."""
    lines = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        where = _where(loc)
        key = str(loc[-1]) if loc else ""
        if problem["type"] == "extra_forbidden" and key in _UNSUPPORTED_SD_SCRIPTS_KEYS:
            table = _where(loc[:-1]) or "top level"
            lines.append(f"{path}: {table}: the sd-scripts option {key!r} is not supported by Furnace; remove it")
        elif problem["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, _KNOWN_KEYS, n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            lines.append(f"{path}: {where}: unknown key{hint}")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            got = "" if isinstance(problem["input"], dict) else f" (got {show_value(problem['input'])})"
            lines.append(f"{path}: {where}: {message[:1].lower()}{message[1:]}{got}")
    return lines


def _resolve_image_dir(raw: str, path: Path, where: str) -> Path:
    """sd-scripts reads a relative image_dir from the working directory; the file's own folder is tried next."""
    image_dir = Path(raw).expanduser()
    if image_dir.is_absolute():
        candidates = [image_dir]
    else:
        candidates = [Path.cwd() / image_dir, path.parent.resolve() / image_dir]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = " or ".join(str(candidate) for candidate in candidates)
    raise ConfigError([f"{path}: {where}.image_dir: folder not found: {raw!r} (looked for {tried})"])


def load_dataset_file(
    path: Path, defaults: DatasetBlueprint, subset_defaults: SubsetBlueprint
) -> list[DatasetBlueprint]:
    """Read an sd-scripts dataset TOML into blueprints (see module docstring for the fallback order)."""
    text = read_toml_text(path, "dataset config file", "an sd-scripts dataset .toml file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: invalid TOML: {error}"]) from None
    try:
        parsed = _DatasetFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_problem_lines(error, path)) from None
    if not parsed.datasets:
        raise ConfigError([f"{path}: no [[datasets]] table; add at least one with a [[datasets.subsets]] image_dir"])
    general = parsed.general.model_dump(exclude_none=True)
    blueprints = []
    for index, dataset in enumerate(parsed.datasets):
        where = f"datasets[{index}]"
        dataset_options = {**general, **dataset.model_dump(exclude_none=True, exclude={"subsets"})}
        if not dataset.subsets:
            raise ConfigError([f"{path}: {where}: no [[datasets.subsets]] with an image_dir"])
        subsets = []
        for sub_index, subset in enumerate(dataset.subsets):
            options = {**dataset_options, **subset.model_dump(exclude_none=True)}
            subset_where = f"{where}.subsets[{sub_index}]"
            if "image_dir" not in options:
                raise ConfigError([f"{path}: {subset_where}: image_dir is required (the folder of its images)"])
            image_dir = _resolve_image_dir(options.pop("image_dir"), path, subset_where)
            masks = _subset_masks(options, subset_defaults, path, subset_where)
            subset_fields = {k: v for k, v in options.items() if k in _SUBSET_OPTION_TYPES and k not in _MASK_KEYS}
            subsets.append(replace(subset_defaults, image_dir=image_dir, **subset_fields, **masks))
        dataset_fields = {k: v for k, v in dataset_options.items() if k in _DATASET_OPTION_TYPES}
        blueprints.append(replace(defaults, subsets=tuple(subsets), **dataset_fields))
    return blueprints


_MASK_KEYS = ("alpha_mask", "conditioning_data_dir")


def _subset_masks(
    options: dict[str, Any], defaults: SubsetBlueprint, path: Path, where: str
) -> dict[str, Any]:
    """A dataset-file subset's mask source: its own ``conditioning_data_dir`` / ``alpha_mask`` keys, else the run
    config's (``dataset.mask_dir``, or alpha with ``dataset.masked_loss``), which regularization subsets do not
    inherit."""
    if "conditioning_data_dir" in options:
        if not defaults.masked:
            raise ConfigError(
                [f"{path}: {where}.conditioning_data_dir: masks are used only with dataset.masked_loss = true; "
                 "turn it on or remove the key"]
            )
        folder = _resolve_image_dir(options["conditioning_data_dir"], path, f"{where}.conditioning_data_dir")
        return {"mask_dir": folder, "alpha_mask": False}
    if "alpha_mask" in options:
        return {"mask_dir": None, "alpha_mask": options["alpha_mask"]}
    if options.get("is_reg"):
        return {"mask_dir": None, "alpha_mask": False}
    return {}


def subsets_from_folders(root: Path, defaults: SubsetBlueprint, is_reg: bool, kind: str) -> list[SubsetBlueprint]:
    """``root/N_tokens/`` folders as subsets (N repeats, class tokens ``tokens``), sorted by name.

    A sub-folder without the ``N_`` prefix, and images lying in ``root`` itself, get ``defaults.num_repeats``
    and no class tokens. ``kind`` names the config key in errors.
    """
    if not root.is_dir():
        raise ConfigError([f"{kind}: folder not found: {root}"])
    if is_reg:
        defaults = replace(defaults, alpha_mask=False, mask_dir=None)
    subsets = [replace(defaults, image_dir=root, class_tokens=None, is_reg=is_reg)] if list_images(root) else []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            named = parse_repeat_folder(folder)
        except RepeatFolderError as error:
            raise ConfigError([f"{kind}: {error}"]) from None
        repeats, tokens = (named.repeats, named.class_tokens) if named else (defaults.num_repeats, None)
        if repeats < 1:
            logger.warning("%s: %s", folder, ZERO_REPEATS)
            continue
        masks = mask_folder_for(defaults.mask_dir, folder) if defaults.mask_dir else None
        subsets.append(
            replace(
                defaults, image_dir=folder, num_repeats=repeats, class_tokens=tokens, is_reg=is_reg, mask_dir=masks
            )
        )
    if not subsets:
        raise ConfigError([f"{kind}: {root} holds no images and no image folders (name them like '10_sks dog')"])
    return subsets


def _defaults_from(section: DatasetSection, blueprint: type) -> dict[str, Any]:
    """Run-config values for every blueprint field the ``dataset`` section also has."""
    values = {f.name: getattr(section, f.name) for f in fields(blueprint) if f.name in DatasetSection.model_fields}
    if blueprint is SubsetBlueprint:
        values["mask_dir"] = Path(section.mask_dir) if section.mask_dir else None
        values["alpha_mask"] = section.masked_loss and not section.mask_dir
    return values


def blueprints_from_config(section: DatasetSection) -> list[DatasetBlueprint]:
    """The datasets a run trains on: its dataset TOML, or ``train_data_dir`` (+ ``reg_data_dir``) folders."""
    subset_defaults = SubsetBlueprint(image_dir=Path("."), **_defaults_from(section, SubsetBlueprint))
    defaults = DatasetBlueprint(subsets=(), **_defaults_from(section, DatasetBlueprint))
    if section.dataset_config:
        return load_dataset_file(Path(section.dataset_config), defaults, subset_defaults)
    if not section.train_data_dir:
        raise ConfigError(["dataset.train_data_dir: is required (or set dataset.dataset_config)"])
    subsets = subsets_from_folders(Path(section.train_data_dir), subset_defaults, False, "dataset.train_data_dir")
    if section.reg_data_dir:
        subsets += subsets_from_folders(Path(section.reg_data_dir), subset_defaults, True, "dataset.reg_data_dir")
    return [replace(defaults, subsets=tuple(subsets))]


def validation_subsets(section: DatasetSection) -> list[SubsetBlueprint]:
    """``dataset.validation_dir`` as subsets: its ``N_name`` folders, or the images it holds directly."""
    if not section.validation_dir:
        return []
    subset_defaults = SubsetBlueprint(image_dir=Path("."), **_defaults_from(section, SubsetBlueprint))
    subset_defaults = replace(subset_defaults, mask_dir=None)  # the mask folder holds the training images' masks
    return subsets_from_folders(Path(section.validation_dir), subset_defaults, False, "dataset.validation_dir")


def with_dreambooth_subsets(datasets: list[DatasetBlueprint], section: DreamBoothSection) -> list[DatasetBlueprint]:
    """Apply the DreamBooth prompts: ``instance_prompt`` captions instance images that have no caption file, and
    ``class_data_dir`` joins the first dataset as a regularization subset captioned ``class_prompt``."""
    if not (section.instance_prompt or section.class_data_dir):
        return datasets
    updated = []
    for dataset in datasets:
        subsets = [
            replace(subset, class_tokens=section.instance_prompt)
            if section.instance_prompt and not subset.is_reg
            else subset
            for subset in dataset.subsets
        ]
        updated.append(replace(dataset, subsets=tuple(subsets)))
    if section.class_data_dir:
        template = next(subset for subset in updated[0].subsets if not subset.is_reg)
        class_subset = replace(
            template,
            image_dir=Path(section.class_data_dir),
            num_repeats=1,
            class_tokens=section.class_prompt,
            is_reg=True,
            alpha_mask=False,
            mask_dir=None,
        )
        updated[0] = replace(updated[0], subsets=(*updated[0].subsets, class_subset))
    return updated
