"""Write an original-layout single-file checkpoint (``.safetensors``) that A1111 and ComfyUI load."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from library.atomic_files import atomic_path
from library.models.families import get_family
from library.models.single_file.convert import diffusers_to_original

logger = logging.getLogger(__name__)

SAI_MODEL_SPEC_VERSION = "1.0.1"
# modelspec spells the prediction types its own way.
_MODELSPEC_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v"}


def default_metadata(family: str, title: str) -> dict[str, str]:
    """The ``modelspec.*`` entries that tell other programs what the file is."""
    model_family = get_family(family)
    resolution = model_family.default_resolution
    return {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC_VERSION,
        "modelspec.architecture": model_family.modelspec_architecture,
        "modelspec.prediction_type": _MODELSPEC_PREDICTION[model_family.prediction_type],
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.title": title,
    }


def save_original_checkpoint(
    path: str | os.PathLike,
    family: str,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    configs: Mapping[str, Mapping],
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Convert the components to the original layout and write them atomically.

    ``metadata`` entries override the defaults; ``dtype`` casts floating-point tensors (e.g. ``torch.float16``).
    """
    path = Path(path)
    merged = {**default_metadata(family, path.stem), **(metadata or {})}
    not_strings = [key for key, value in merged.items() if not isinstance(value, str)]
    if not_strings:
        raise ValueError(f"safetensors metadata values must be strings; {not_strings[0]!r} is not")
    tensors = {}
    for key, tensor in diffusers_to_original(family, state_dicts, configs).items():
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.detach().contiguous()
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=merged)
    logger.info("wrote %s checkpoint %s (%d tensors)", family, path, len(tensors))
