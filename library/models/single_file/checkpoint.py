"""Write an original-layout single-file checkpoint (``.safetensors``) that A1111 and ComfyUI load, or a split family's
separate files (FLUX.1's transformer, ``ae``, ``clip_l``, ``t5xxl``) as sd-scripts, ComfyUI and Forge load them."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from library.atomic_files import atomic_path
from library.models.families import get_family
from library.models.single_file.components import component_layouts
from library.models.single_file.convert import diffusers_to_original

logger = logging.getLogger(__name__)

SAI_MODEL_SPEC_VERSION = "1.0.1"
# modelspec spells the prediction types its own way, and has no name for flow matching (left out, as sd-scripts does).
_MODELSPEC_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v"}


def default_metadata(family: str, title: str) -> dict[str, str]:
    """The ``modelspec.*`` entries that tell other programs what the file is."""
    model_family = get_family(family)
    resolution = model_family.default_resolution
    metadata = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC_VERSION,
        "modelspec.architecture": model_family.modelspec_architecture,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.title": title,
    }
    if model_family.prediction_type in _MODELSPEC_PREDICTION:
        metadata["modelspec.prediction_type"] = _MODELSPEC_PREDICTION[model_family.prediction_type]
    return metadata


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
    tensors = _original_tensors(family, state_dicts, configs, dtype)
    _write(path, tensors, merged)
    logger.info("wrote %s checkpoint %s (%d tensors)", family, path, len(tensors))


def save_split_files(
    folder: str | os.PathLike,
    family: str,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    configs: Mapping[str, Mapping],
    dtype: torch.dtype | None = None,
) -> dict[str, Path]:
    """Write a family that comes split (FLUX.1) as its usual separate files, each without its checkpoint prefix:
    ``<family>.safetensors`` (the denoiser, with the modelspec metadata), ``ae.safetensors``,
    ``clip_l.safetensors``, ``t5xxl.safetensors``. Returns the paths by option ("" = the denoiser's file)."""
    model_family = get_family(family)
    if not model_family.split_file_keys:
        raise ValueError(f"{family} does not come as split files")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = {model_family.denoiser: "", "vae": model_family.vae_split_file_key}
    options |= {spec.component: spec.split_file_key for spec in model_family.text_encoders}
    tensors = _original_tensors(family, state_dicts, configs, dtype)
    paths = {}
    for layout in component_layouts(family):
        option = options[layout.name]
        path = folder / f"{option or family}.safetensors"
        part = {
            key.removeprefix(layout.prefix): value for key, value in tensors.items() if key.startswith(layout.prefix)
        }
        _write(path, part, default_metadata(family, path.stem) if not option else {})
        paths[option] = path
    logger.info("wrote %s split files to %s", family, folder)
    return paths


def _original_tensors(
    family: str,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    configs: Mapping[str, Mapping],
    dtype: torch.dtype | None,
) -> dict[str, torch.Tensor]:
    tensors = {}
    for key, tensor in diffusers_to_original(family, state_dicts, configs).items():
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.detach().contiguous()
    return tensors


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
