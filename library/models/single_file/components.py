"""Which components a family's single file holds, under which prefix, in which layout, as which module class.

The expected tensor names and shapes of a component come from instantiating its module class on the meta
device: no memory, no weights, and exactly what ``load_state_dict(strict=True)`` will ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from library.models.families import get_family
from library.models.single_file.clip_layout import clip_rules, open_clip_rules
from library.models.single_file.bfl_layout import bfl_transformer_rules
from library.models.single_file.rules import KeyRule
from library.models.single_file.t5_layout import t5_rules
from library.models.single_file.unet_layout import unet_rules
from library.models.single_file.vae_layout import vae_rules

COMPONENTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2")

LayoutKind = Literal["unet", "bfl_transformer", "vae", "clip", "open_clip", "t5"]

# Where the denoiser and the VAE sit in each original layout: (component, prefix, kind).
_DENOISER_AND_VAE: dict[str, tuple[tuple[str, str, LayoutKind], ...]] = {
    "ldm": (("unet", "model.diffusion_model.", "unet"), ("vae", "first_stage_model.", "vae")),
    "bfl": (("transformer", "model.diffusion_model.", "bfl_transformer"), ("vae", "vae.", "vae")),
}


@dataclass(frozen=True)
class ComponentLayout:
    """Where one component lives in an original-layout file."""

    name: str  # one of COMPONENTS
    prefix: str
    kind: LayoutKind
    model_class: str  # diffusers / transformers class name


def component_layouts(family: str) -> tuple[ComponentLayout, ...]:
    """The components of ``family`` in file order (denoiser, VAE, text encoders)."""
    model_family = get_family(family)
    classes = {model_family.denoiser: model_family.denoiser_class, "vae": "AutoencoderKL"}
    layouts = [
        ComponentLayout(name, prefix, kind, classes[name])
        for name, prefix, kind in _DENOISER_AND_VAE[model_family.original_layout]
    ]
    for spec in model_family.text_encoders:
        # OpenCLIP towers sit under "<embedder>.model.", Hugging Face CLIP and T5 under "<embedder>.transformer.".
        kind: LayoutKind = "open_clip" if spec.original_prefix.endswith(".model.") else "clip"
        if spec.architecture == "T5EncoderModel":
            kind = "t5"
        layouts.append(ComponentLayout(spec.component, spec.original_prefix, kind, spec.architecture))
    return tuple(layouts)


def with_text_model_wrapper(family: str, state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Add the ``text_model.`` wrapper to CLIP-L keys of files saved without it (by early transformers versions)."""
    renamed: dict[str, torch.Tensor] = {}
    for layout in component_layouts(family):
        wrapped = layout.prefix + "text_model."
        if layout.kind != "clip" or any(key.startswith(wrapped) for key in state_dict):
            continue
        for key in state_dict:
            if key.startswith(layout.prefix):
                renamed[key] = wrapped + key.removeprefix(layout.prefix)
    if not renamed:
        return state_dict
    return _RenamedKeys(state_dict, renamed)


class _RenamedKeys(Mapping[str, torch.Tensor]):
    """``state_dict`` with some keys renamed, without reading its tensors (it may read them lazily)."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], renamed: dict[str, str]) -> None:
        self._state_dict = state_dict
        self._source = {renamed.get(key, key): key for key in state_dict}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._state_dict[self._source[key]]

    def __iter__(self):
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


def instantiate(model_class: str, config: dict) -> torch.nn.Module:
    """Build a component module from a plain config dict (weights as the current device context decides)."""
    if model_class in ("UNet2DConditionModel", "AutoencoderKL", "FluxTransformer2DModel"):
        import diffusers

        return getattr(diffusers, model_class).from_config(config)
    import transformers

    config_class = transformers.T5Config if model_class == "T5EncoderModel" else transformers.CLIPTextConfig
    return getattr(transformers, model_class)(config_class.from_dict(config))


def expected_shapes(layout: ComponentLayout, config: dict) -> dict[str, torch.Size]:
    """State-dict key -> shape of the component ``config`` describes."""
    with torch.device("meta"):
        module = instantiate(layout.model_class, config)
    return {key: tensor.shape for key, tensor in module.state_dict().items()}


def layout_rules(layout: ComponentLayout, config: dict, keys: list[str]) -> list[KeyRule]:
    """The key rules of one component, generated from its config and its module's keys."""
    if layout.kind == "unet":
        return unet_rules(config, keys)
    if layout.kind == "bfl_transformer":
        return bfl_transformer_rules(config, keys)
    if layout.kind == "t5":
        return t5_rules(keys)
    if layout.kind == "vae":
        return vae_rules(config, keys)
    if layout.kind == "clip":
        return clip_rules(keys)
    # A tower without projection is SD2's encoder, which leaves out the last block of the original tower.
    complete_tower = layout.model_class == "CLIPTextModel"
    return open_clip_rules(keys, config["num_hidden_layers"], complete_tower)
