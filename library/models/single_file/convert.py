"""Convert whole models between diffusers state dicts and one original-layout (A1111/ComfyUI) state dict."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from library.models.single_file.components import (
    component_layouts,
    expected_shapes,
    layout_rules,
    with_text_model_wrapper,
)
from library.models.single_file.infer_config import infer_configs, infer_vae_config, reference_configs
from library.models.single_file.rules import to_diffusers, to_original
from library.models.single_file.shape_reader import ShapeReader

logger = logging.getLogger(__name__)


def diffusers_to_original(
    family: str,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    configs: Mapping[str, Mapping],
) -> dict[str, torch.Tensor]:
    """One original-layout state dict from each component's module state dict and config."""
    layouts = component_layouts(family)
    unknown = sorted(set(state_dicts) - {layout.name for layout in layouts})
    if unknown:
        raise ValueError(f"a {family} checkpoint has no component {unknown[0]!r}")
    original: dict[str, torch.Tensor] = {}
    for layout in layouts:
        if layout.name not in state_dicts or layout.name not in configs:
            raise ValueError(f"a {family} checkpoint needs the {layout.name} state dict and its config")
        config = dict(configs[layout.name])
        shapes = expected_shapes(layout, config)
        rules = layout_rules(layout, config, list(shapes))
        original.update(to_original(rules, state_dicts[layout.name], shapes, layout.prefix, layout.name))
    return original


def original_to_diffusers(
    family: str, state_dict: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Tensor] | None = None
) -> tuple[dict[str, dict], dict[str, dict[str, torch.Tensor]]]:
    """(configs, state dicts) per component; keys that are not model weights (EMA copies, buffers) are ignored.

    ``shapes`` (the same keys as shape-only tensors) is what the architecture is inferred from when
    ``state_dict`` reads its tensors lazily; each tensor is then looked up once, when it is converted.
    """
    state_dict = with_text_model_wrapper(family, state_dict)
    configs = infer_configs(family, state_dict if shapes is None else with_text_model_wrapper(family, shapes))
    state_dicts: dict[str, dict[str, torch.Tensor]] = {}
    known: set[str] = set()
    for layout in component_layouts(family):
        shapes = expected_shapes(layout, configs[layout.name])
        rules = layout_rules(layout, configs[layout.name], list(shapes))
        state_dicts[layout.name] = to_diffusers(rules, state_dict, shapes, layout.prefix, layout.name)
        known.update(layout.prefix + rule.original for rule in rules)
    ignored = sorted(set(state_dict) - known)
    if ignored:
        logger.debug("ignored %d checkpoint keys that are not model weights, e.g. %s", len(ignored), ignored[0])
    return configs, state_dicts


def vae_original_to_diffusers(
    family: str, state_dict: Mapping[str, torch.Tensor]
) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, state dict) of a stand-alone VAE file in the original layout, with or without its
    ``first_stage_model.`` prefix (A1111 ``.vae.safetensors`` files usually have none)."""
    layout = next(layout for layout in component_layouts(family) if layout.name == "vae")
    prefixed = {
        key if key.startswith(layout.prefix) else layout.prefix + key: value for key, value in state_dict.items()
    }
    config = infer_vae_config(ShapeReader(prefixed, layout.prefix, "vae"), reference_configs(family)["vae"])
    shapes = expected_shapes(layout, config)
    rules = layout_rules(layout, config, list(shapes))
    return config, to_diffusers(rules, prefixed, shapes, layout.prefix, "vae")
