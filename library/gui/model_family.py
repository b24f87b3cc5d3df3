"""The family of the base model a form names: its `model.family`, else detected from its base model (configs or
file header only) when that lies in the models folders; unknown otherwise. The prompt editor and the dataset check
use it for the sizes the run will fit or refuse."""

from __future__ import annotations

from library.models.detect import detect_family
from library.models.errors import ModelLoadError
from library.models.families import ModelFamily, get_family

from .paths import inside_any
from .settings import GuiSettings


def form_family(family: str | None, model_path: str | None, settings: GuiSettings) -> ModelFamily | None:
    """The family, or None while the form names neither a family nor a readable model inside the models folders
    (the form reports a bad value itself; the run refuses a bad model)."""
    try:
        if family and family != "auto":
            return get_family(family)
        target = settings.workdir / str(model_path or "")
        if model_path and inside_any(target, settings.model_roots) and target.exists():
            return detect_family(target.resolve())
    except (ValueError, ModelLoadError, OSError):
        pass
    return None
