"""A base model read one tensor at a time, in diffusers names, whatever its layout on disk.

The checkpoint tools (merge-into, merge-models, extract) visit every weight once. Loading whole models for that
holds each model in float32 and then a converted copy for saving; a :class:`ModelSource` instead reads a tensor when
it is asked for and forgets it:

- an original-layout ``.safetensors`` file is streamed (``StreamedTensors``) and converted one key rule at a time;
- a diffusers folder whose components are single ``.safetensors`` files holding the modules' own keys (what
  diffusers and transformers save) is streamed per component;
- a ``.ckpt``, or a folder in another layout (sharded, ``.bin``, older key names), is read whole through the
  loader: one model in memory, as before.

Each component is a :class:`Part`: its layout in the original file, its config, the diffusers tensor shapes and the
key rules relating the two, from the same tables the loader and the single-file writer use. Every look-up may also
be asked for meta tensors (shape and stored dtype, no data), which is how a writer plans a file before reading.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from library.models.checkpoint_io import read_state_dict
from library.models.detect import detect_diffusers_family, detect_original_family
from library.models.errors import ModelLoadError
from library.models.families import ModelFamily, get_family
from library.models.single_file import infer_configs
from library.models.single_file.components import (
    ComponentLayout,
    component_layouts,
    expected_shapes,
    instantiate,
    layout_rules,
    with_text_model_wrapper,
)
from library.models.single_file.rules import KeyRule, to_diffusers
from library.models.tensor_stream import StreamedTensors

Tensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Part:
    """One component of a model: where it sits in the original layout and how its tensors map to diffusers'."""

    layout: ComponentLayout
    config: dict
    shapes: dict[str, torch.Size]  # diffusers key -> shape
    rules: list[KeyRule]
    owners: dict[str, tuple[KeyRule, int]] = field(repr=False)  # diffusers key -> the rule that stores it, position

    @property
    def name(self) -> str:
        return self.layout.name

    def original_key(self, rule: KeyRule) -> str:
        return self.layout.prefix + rule.original


def make_part(layout: ComponentLayout, config: dict) -> Part:
    shapes = expected_shapes(layout, config)
    rules = layout_rules(layout, config, list(shapes))
    owners = {
        key: (rule, position)
        for rule in rules
        if not rule.placeholder
        for position, key in enumerate(rule.diffusers)
    }
    return Part(layout, config, shapes, rules, owners)


class ModelSource(abc.ABC):
    """A model's tensors by component and diffusers key, read on demand (see the module docstring)."""

    def __init__(self, path: Path, family: ModelFamily, parts: dict[str, Part]) -> None:
        self.path, self.family, self.parts = path, family, parts

    def tensors(self, part: Part, rule: KeyRule, meta: bool = False) -> list[torch.Tensor]:
        """The diffusers tensors ``rule`` names (a placeholder's: its sources), in ``part``'s shapes.

        ``part`` may come from another model of the same architecture; a key this model lacks, or holds in another
        shape, is a ValueError naming it.
        """
        if rule.placeholder:
            return [self.tensor(part, key, meta) for key in rule.diffusers]
        return self._rule_tensors(part, rule, meta)

    def tensor(self, part: Part, key: str, meta: bool = False) -> torch.Tensor:
        """One diffusers tensor of ``part``."""
        rule, position = part.owners[key]
        return self._rule_tensors(part, rule, meta)[position]

    def meta_modules(self) -> dict[str, nn.Module]:
        """Every component as a module on the meta device (names and shapes, no weights)."""
        with torch.device("meta"):
            return {name: instantiate(part.layout.model_class, part.config) for name, part in self.parts.items()}

    @abc.abstractmethod
    def _rule_tensors(self, part: Part, rule: KeyRule, meta: bool) -> list[torch.Tensor]:
        """The tensors a (non-placeholder) rule names, read from this model."""


class _KnownKeys(Mapping[str, torch.Tensor]):
    """A lazily read mapping whose membership test reads nothing (``Mapping``'s default reads the tensor)."""

    def __init__(self, tensors: Tensors) -> None:
        self._tensors, self._keys = tensors, frozenset(tensors)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._keys)


class _OriginalSource(ModelSource):
    """An original-layout state dict (streamed or in memory), converted one rule at a time."""

    def __init__(self, path: Path, family: ModelFamily, tensors: Tensors, shapes: Tensors) -> None:
        self._tensors = _KnownKeys(with_text_model_wrapper(family.name, tensors))
        self._shapes = with_text_model_wrapper(family.name, shapes)
        try:
            configs = infer_configs(family.name, self._shapes)
            parts = {layout.name: make_part(layout, configs[layout.name]) for layout in component_layouts(family.name)}
        except ValueError as error:
            raise ModelLoadError(f"{path}: does not match the {family.name} layout: {error}") from None
        super().__init__(path, family, parts)

    def _rule_tensors(self, part: Part, rule: KeyRule, meta: bool) -> list[torch.Tensor]:
        state_dict = self._shapes if meta else self._tensors
        converted = to_diffusers([rule], state_dict, part.shapes, part.layout.prefix, part.name)
        return [converted[key] for key in rule.diffusers]


class _DiffusersSource(ModelSource):
    """Per-component state dicts in diffusers names (streamed files or a loaded model's modules)."""

    def __init__(self, path, family, parts, components: dict[str, Tensors], shapes: dict[str, Tensors]) -> None:
        super().__init__(path, family, parts)
        self._components, self._shapes = components, shapes

    def _rule_tensors(self, part: Part, rule: KeyRule, meta: bool) -> list[torch.Tensor]:
        shapes = self._shapes.get(part.name, {})
        for key in rule.diffusers:
            if key not in shapes or shapes[key].shape != part.shapes[key]:
                raise ValueError(f"{part.name} tensor {key!r} is missing or has another shape in {self.path}")
        found = shapes if meta else self._components[part.name]
        return [found[key] for key in rule.diffusers]


def _meta(tensors: Tensors) -> dict[str, torch.Tensor]:
    return {key: torch.empty(tensor.shape, dtype=tensor.dtype, device="meta") for key, tensor in tensors.items()}


def _single_file(path: Path, family_name: str, stack: contextlib.ExitStack) -> ModelSource:
    if path.suffix.lower() == ".safetensors":
        streamed = stack.enter_context(StreamedTensors(path))
        tensors, shapes, metadata = streamed, streamed.shapes, streamed.metadata
    else:
        tensors, metadata = read_state_dict(path)
        shapes = _meta(tensors)
    if family_name != "auto":
        return _OriginalSource(path, get_family(family_name), tensors, shapes)
    return _OriginalSource(path, detect_original_family(path, tensors.keys(), metadata), tensors, shapes)


def _component_file(folder: Path) -> Path | None:
    """A component's single weights file, named as diffusers and transformers save it."""
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from transformers.utils import SAFE_WEIGHTS_NAME

    return next((folder / name for name in (SAFETENSORS_WEIGHTS_NAME, SAFE_WEIGHTS_NAME) if (folder / name).is_file()),
                None)


def _folder(path: Path, family_name: str, stack: contextlib.ExitStack) -> ModelSource:
    family = detect_diffusers_family(path) if family_name == "auto" else get_family(family_name)
    parts, components, shapes = {}, {}, {}
    for layout in component_layouts(family.name):
        config_file = path / layout.name / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(
                f"{path / layout.name}: missing (or no config.json); the {family.name} folder needs it"
            )
        parts[layout.name] = make_part(layout, json.loads(config_file.read_text(encoding="utf-8")))
        weights = _component_file(path / layout.name)
        streamed = None if weights is None else stack.enter_context(StreamedTensors(weights))
        if streamed is None or set(streamed) != set(parts[layout.name].shapes):
            return _loaded_folder(path, family)
        components[layout.name], shapes[layout.name] = streamed, streamed.shapes
    return _DiffusersSource(path, family, parts, components, shapes)


def _loaded_folder(path: Path, family: ModelFamily) -> ModelSource:
    """A folder the loader has to read (sharded, ``.bin``, older key names): its modules' state dicts."""
    from library.models.loader import load_base_model
    from library.models.pipeline import component_configs, component_modules

    model = load_base_model(path, family=family.name)
    modules = component_modules(model.family, model.unet, model.vae, model.text_encoders)
    configs = component_configs(modules)
    parts = {layout.name: make_part(layout, configs[layout.name]) for layout in component_layouts(family.name)}
    state_dicts = {name: module.state_dict() for name, module in modules.items()}
    return _DiffusersSource(path, family, parts, state_dicts, {name: _meta(sd) for name, sd in state_dicts.items()})


@contextlib.contextmanager
def open_model(path: Path, family: str = "auto", what: str = "base model") -> Iterator[ModelSource]:
    """A :class:`ModelSource` over a single file or a diffusers folder; its files are closed when the block ends."""
    if not path.exists():
        raise ModelLoadError(f"{path}: {what} not found")
    with contextlib.ExitStack() as stack:
        yield _folder(path, family, stack) if path.is_dir() else _single_file(path, family, stack)
