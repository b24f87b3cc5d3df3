"""How big a base model is, read without loading its weights: parameters per component, the denoiser's tensor shapes
and the denoiser and VAE configs (the denoiser is the UNet of SD families, the transformer of DiT families).

A ``.safetensors`` file and a diffusers folder answer from their headers and ``config.json`` files. A ``.ckpt``
cannot be read without unpickling it whole, so it is sized as its family's reference model (SD1, the smallest,
when the family is "auto"), built on the meta device: sizes that are as large as a real model of the family.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from library.models.checkpoint_io import SAFETENSORS_SUFFIXES
from library.models.detect import detect_diffusers_family, detect_original_family
from library.models.families import SD1, ModelFamily, get_family
from library.models.joined_tensors import JoinedTensors
from library.models.loader import check_exists, component_classes, file_parts
from library.models.tensor_stream import StreamedTensors

Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class ModelSizes:
    """The sizes of one base model (see module docstring)."""

    family: ModelFamily
    parameters: Mapping[str, int]  # component ("unet" or "transformer", "vae", "text_encoder"...) -> parameters
    unet_shapes: Shapes  # every denoiser tensor's shape, by key (diffusers or original names)
    unet_config: Mapping[str, Any]  # the denoiser's config
    vae_config: Mapping[str, Any]
    source: str  # how the sizes were read, for the log

    @property
    def denoiser_parameters(self) -> int:
        return self.parameters[self.family.denoiser]

    @property
    def text_encoder_parameters(self) -> int:
        return sum(self.parameters[spec.component] for spec in self.family.text_encoders)

    @property
    def fine_tuned_text_encoder_parameters(self) -> int:
        """The encoders ``dreambooth.train_text_encoder`` trains (FLUX.1: CLIP-L, not T5)."""
        return sum(self.parameters[spec.component] for spec in self.family.text_encoders if spec.fine_tuned)


def read_model_sizes(
    path: str | Path, family: str = "auto", split_files: Mapping[str, str | Path | None] | None = None
) -> ModelSizes:
    """The sizes of the base model at ``path``; ``family`` and ``split_files`` as the loader takes them. Raises
    ``ModelLoadError`` as the loader would for a missing or unrecognised model, ``ValueError`` for a file whose
    layout does not fit."""
    source = Path(path).expanduser()
    check_exists(source)
    if source.is_dir():
        return _folder_sizes(source, family)
    if source.suffix.lower() in SAFETENSORS_SUFFIXES:
        return _single_file_sizes(source, family, split_files or {})
    return _reference_sizes(get_family(family) if family != "auto" else SD1)


def _count(shapes: Shapes) -> int:
    return sum(int(torch.Size(shape).numel()) for shape in shapes.values())


def _header_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    with StreamedTensors(path) as tensors:
        return {key: tuple(tensor.shape) for key, tensor in tensors.shapes.items()}, tensors.metadata


def _single_file_sizes(path: Path, family_name: str, split_files: Mapping[str, str | Path | None]) -> ModelSizes:
    from library.models.single_file import infer_configs
    from library.models.single_file.components import component_layouts

    shapes, metadata = _header_shapes(path)
    family = detect_original_family(path, shapes, metadata) if family_name == "auto" else get_family(family_name)
    with JoinedTensors(file_parts(path, family, split_files, set(shapes))) as joined:
        shapes = {key: tuple(tensor.shape) for key, tensor in joined.shapes.items()}
    by_component: dict[str, dict[str, tuple[int, ...]]] = {}
    for layout in component_layouts(family.name):
        by_component[layout.name] = {key: shape for key, shape in shapes.items() if key.startswith(layout.prefix)}
    configs = infer_configs(family.name, {key: torch.empty(shape, device="meta") for key, shape in shapes.items()})
    return ModelSizes(
        family=family,
        parameters={name: _count(component) for name, component in by_component.items()},
        unet_shapes=by_component[family.denoiser],
        unet_config=configs[family.denoiser],
        vae_config=configs["vae"],
        source=f"{path.name} header",
    )


def _folder_sizes(folder: Path, family_name: str) -> ModelSizes:
    family = detect_diffusers_family(folder) if family_name == "auto" else get_family(family_name)
    classes = component_classes(family)
    configs, shapes = {}, {}
    for name, model_class in classes.items():
        configs[name] = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
        files = sorted((folder / name).glob("*.safetensors"))
        shapes[name] = (
            {key: shape for file in files for key, shape in _header_shapes(file)[0].items()}
            if files
            else _meta_shapes(model_class, configs[name])
        )
    return ModelSizes(
        family=family,
        parameters={name: _count(component) for name, component in shapes.items()},
        unet_shapes=shapes[family.denoiser],
        unet_config=configs[family.denoiser],
        vae_config=configs["vae"],
        source=f"{folder.name} headers",
    )


def _reference_sizes(family: ModelFamily) -> ModelSizes:
    from library.models.single_file import reference_configs
    from library.models.single_file.components import component_layouts

    configs = reference_configs(family.name)
    shapes = {
        layout.name: _meta_shapes(layout.model_class, configs[layout.name]) for layout in component_layouts(family.name)
    }
    return ModelSizes(
        family=family,
        parameters={name: _count(component) for name, component in shapes.items()},
        unet_shapes=shapes[family.denoiser],
        unet_config=configs[family.denoiser],
        vae_config=configs["vae"],
        source=f"the {family.name} reference model (a .ckpt is not read before loading)",
    )


def _meta_shapes(model_class: str, config: dict) -> dict[str, tuple[int, ...]]:
    """Shapes of a component built from its config on the meta device (no memory, no weights)."""
    from library.models.single_file.components import instantiate

    plain = {key: value for key, value in config.items() if not key.startswith("_") and key != "architectures"}
    with torch.device("meta"):
        module = instantiate(model_class, plain)
    return {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}
