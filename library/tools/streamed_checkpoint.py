"""Write an original-layout single-file checkpoint tensor by tensor, from a model source and a per-rule function.

The merge tools compute each output tensor from the tensors of one key rule (a base weight plus LoRA updates, a
weighted sum of two or three models); this writes them as they come, so memory holds a few tensors instead of the
models and a converted copy. The file holds exactly what ``save_original_checkpoint`` writes for the same model:
every rule of every component, placeholders made from their (computed) sources, floats cast to ``dtype``, the
family's modelspec defaults under ``metadata``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from library.models.single_file.checkpoint import default_metadata
from library.models.single_file.rules import KeyRule
from library.tools.model_source import ModelSource, Part
from library.tools.safetensors_writer import SafetensorsWriter, TensorSpec

logger = logging.getLogger(__name__)

Produce = Callable[[Part, KeyRule], list[torch.Tensor]]
"""The diffusers tensors of a (non-placeholder) rule as they are to be written."""


def _inputs(produce: Produce, part: Part, rule: KeyRule) -> list[torch.Tensor]:
    """What a rule's transform is applied to: a placeholder's inputs are its sources as produced."""
    if not rule.placeholder:
        return produce(part, rule)
    return [produce(part, part.owners[key][0])[part.owners[key][1]] for key in rule.diffusers]


def write_streamed_checkpoint(
    path: Path,
    source: ModelSource,
    produce: Produce,
    dtype: torch.dtype,
    metadata: Mapping[str, str],
    desc: str,
) -> int:
    """Write the checkpoint of ``source``'s architecture with ``produce``'s tensors; returns the tensor count."""
    plan = [(part, rule) for part in source.parts.values() for rule in part.rules]
    specs: dict[str, TensorSpec] = {}
    for part, rule in plan:
        shape = rule.transform.to_original(source.tensors(part, rule, meta=True))
        specs[part.original_key(rule)] = (dtype if shape.is_floating_point() else shape.dtype, tuple(shape.shape))
    with SafetensorsWriter(path, specs, {**default_metadata(source.family.name, path.stem), **metadata}) as writer:
        for part, rule in tqdm(plan, desc=desc, unit="tensor", leave=False):
            key = part.original_key(rule)
            writer.write(key, rule.transform.to_original(_inputs(produce, part, rule)).to(specs[key][0]))
    logger.info("wrote %s checkpoint %s (%d tensors)", source.family.name, path, len(plan))
    return len(plan)
