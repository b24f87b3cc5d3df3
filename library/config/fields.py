"""Field types shared by the config sections, and the error cross-field checks raise.

Sections are frozen: a run's config is a value, never mutated after validation, so every normalisation
happens in validators (before-mode for rewrites, after-mode for checks).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, PlainSerializer
from pydantic.fields import FieldInfo

# How the words of a key read in a title (the GUI's labels); a field with a better name gives its own `title=`.
_TITLE_WORDS = {
    "dir": "folder", "lr": "LR", "reso": "resolution", "ema": "EMA", "nvme": "NVMe", "cfg": "CFG", "snr": "SNR",
    "fp8": "FP8", "vae": "VAE", "ae": "AE", "unet": "UNet", "dora": "DoRA", "lokr": "LoKr", "clip": "CLIP",
    "l": "L", "t5xxl": "T5-XXL", "cpu": "CPU", "aug": "augmentation", "num": "number of", "n": "N", "te": "text encoder",
    "dreambooth": "DreamBooth", "deepspeed": "DeepSpeed",
}


def readable_title(name: str, _info: FieldInfo) -> str:
    """A key as a label: `min_bucket_reso` -> "Min bucket resolution" (the schema's title, shown by the GUI)."""
    words = [_TITLE_WORDS.get(word, word) for word in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


SECTION_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, field_title_generator=readable_title)

# Upper bounds no real run reaches; beyond them a typo would only surface as an out-of-memory kill or a run that
# never ends.
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 4096, 8
MAX_STEPS = 10_000_000
MAX_EPOCHS = 100_000


Problem = tuple[str, str]


class FieldError(ValueError):
    """Cross-field problems as (path relative to the validating model, expectation) pairs."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


def raise_problems(problems: Iterable[Problem]) -> None:
    """Report every cross-field problem of a model at once, not just the first."""
    found = list(problems)
    if found:
        raise FieldError(found)


def _empty_to_none(value: Any) -> Any:
    """GUI forms and kohya_ss TOMLs write "" for an unset path; treat it as unset."""
    return None if value == "" else value


OptionalPath = Annotated[str | None, BeforeValidator(_empty_to_none)]


def _parse_size(value: Any) -> Any:
    """Accept 512, "512", "512,768", [512] and [512, 768]; a single number means a square."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, 'W,H' or [W, H]")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        if len(parts) not in (1, 2) or not all(part.isdigit() for part in parts):
            raise ValueError("expected an integer, 'W,H' or [W, H]")
        value = [int(part) for part in parts]
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return (value[0], value[0])
        if len(value) != 2:
            raise ValueError("expected an integer, 'W,H' or [W, H]")
        return tuple(value)
    return value


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Latents are 1/8 of the image, so both sides must divide by 8; 64 is the smallest useful size."""
    if any(not MIN_SIDE <= side <= MAX_SIDE or side % SIDE_MULTIPLE for side in size):
        raise ValueError(f"each side must be a multiple of {SIDE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}")
    return size


Size = Annotated[tuple[int, int], BeforeValidator(_parse_size), AfterValidator(_check_size)]


def _file_suffix(value: str) -> str:
    """A leading dot added; refused unless it can end a file name (no folder separator, not a lone dot)."""
    suffix = value if value.startswith(".") else f".{value}"
    try:
        PurePath("image").with_suffix(suffix)
    except ValueError:
        raise ValueError("must be a file extension like '.txt'") from None
    return suffix


FileSuffix = Annotated[str, AfterValidator(_file_suffix)]
"""A file extension such as a caption file's: ``txt`` and ``.txt`` both read as ``.txt``."""


def _whole_as_int(value: float) -> float | int:
    """Write 100.0 warm-up steps as 100 so a saved config reads like the one the user wrote."""
    return int(value) if float(value).is_integer() else value


StepsOrFraction = Annotated[float, PlainSerializer(_whole_as_int)]


def canonical_choice(choices: tuple[str, ...]) -> BeforeValidator:
    """Match an enum value case-insensitively (sd-scripts does), keeping the canonical spelling."""
    by_lower = {choice.lower(): choice for choice in choices}

    def pick(value: Any) -> Any:
        return by_lower.get(value.lower(), value) if isinstance(value, str) else value

    return BeforeValidator(pick)
