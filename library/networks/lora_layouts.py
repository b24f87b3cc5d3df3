"""The file layouts a LoRA is written in and read from, chosen by ``network.save_format`` and the family record.

- ``kohya`` (default): ``<name>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (``lora_file.py``). Families
  whose record names the denoiser's LoRA modules by BFL's layout (``unet_lora_naming = "bfl"``, FLUX.1) have the
  adapters on diffusers' separate modules fused into BFL's modules (``bfl_lora.py``).
- ``diffusers`` (peft): ``<component>.<module path>.lora_A.weight`` [rank, in] and ``.lora_B.weight`` [out, rank];
  component = the denoiser's (``unet``, ``transformer``) or a text encoder's (``text_encoder``) name, modules by
  diffusers path (SDXL's UNet too, whose kohya names are the original SGM blocks). The alphas
  are not tensors but, as diffusers' own ``save_lora_weights`` writes them, each component's peft ``LoraConfig``
  kwargs in the ``lora_adapter_metadata`` metadata entry (``<component>.r``, ``.lora_alpha``, ``.rank_pattern``,
  ``.alpha_pattern``, ``.target_modules``): diffusers' SD loaders refuse ``.alpha`` keys, and its FLUX.1 loader
  refuses ``.alpha`` keys together with that entry.

Reading accepts either layout whatever was configured (diffusers-layout alphas from that metadata entry, or from
``.alpha`` tensors as older files hold them; diffusers' older ``.lora.down`` / ``.lora_linear_layer.down`` tensor
names too), and also the denoiser under ai-toolkit's ``diffusion_model.`` prefix,
with diffusers or BFL module names. Everything inside Furnace (the live network, merging) works on kohya-keyed dicts
under the names adapters are held by (:mod:`naming`); this module is the only translation to and from files.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from library.config.sections_train import SAVE_FORMATS
from library.models.families import ModelFamily
from library.networks import bfl_lora
from library.networks.lora_file import ALPHA, DORA_SCALE, DOWN, UP, LoraFileError, modules_tensors, split_modules
from library.networks.naming import (
    TEXT_WRAPPER,
    LoraNamer,
    SgmNames,
    flatten,
    text_encoder_name,
    text_encoder_path_in_file,
)

if TYPE_CHECKING:
    from peft import LoraConfig

PEFT_DOWN, PEFT_UP = ".lora_A.weight", ".lora_B.weight"
ADAPTER_METADATA = "lora_adapter_metadata"  # diffusers' metadata entry: {"<component>.<LoraConfig kwarg>": value}
# Keys of files that name modules by dotted path under a component, with peft's or kohya's tensor names, or
# diffusers' older ones (its convert_state_dict_to_diffusers, which SD training scripts still save through).
_DOTTED_ENDINGS = {
    PEFT_DOWN: DOWN, PEFT_UP: UP, DOWN: DOWN, UP: UP, ALPHA: ALPHA,
    ".lora.down.weight": DOWN, ".lora.up.weight": UP,
    ".lora_linear_layer.down.weight": DOWN, ".lora_linear_layer.up.weight": UP,
}
_AI_TOOLKIT_DENOISER = "diffusion_model"
_KOHYA_ENDINGS = (DOWN, UP, ALPHA, DORA_SCALE)

Tensors = dict[str, torch.Tensor]


def is_dotted_layout(family: ModelFamily, tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether a file names modules by dotted path under a component (the diffusers layout, ai-toolkit's and
    ComfyUI's ``diffusion_model.``) rather than by kohya's flattened names."""
    return any(key.partition(".")[0] in _component_prefixes(family) for key in tensors)


def _sgm_names(family: ModelFamily) -> SgmNames | None:
    """The diffusers -> SGM UNet path table of a family whose kohya names are SGM's (SDXL), else None. It depends
    only on the blocks' layout (levels, layers per level), which every model of the family shares, so the family's
    reference config gives it."""
    if family.unet_lora_naming != "sgm":
        return None
    from library.models.single_file import reference_configs

    return SgmNames(reference_configs(family.name)[family.denoiser])


def _component_prefixes(family: ModelFamily) -> dict[str, str]:
    """peft file component -> kohya prefix."""
    prefixes = {family.denoiser: family.unet_lora_prefix, _AI_TOOLKIT_DENOISER: family.unet_lora_prefix}
    prefixes.update({spec.component: spec.lora_prefix for spec in family.text_encoders})
    return prefixes


def kohya_keys(
    family: ModelFamily, tensors: Mapping[str, torch.Tensor], source: str, metadata: Mapping[str, str] | None = None
) -> Tensors:
    """A file's tensors with peft keys renamed to kohya's (a kohya file passes unchanged); module names stay as the
    file has them (diffusers paths flattened, SDXL's UNet ones into its SGM blocks; or BFL's). A module without an ``.alpha`` tensor takes its alpha from
    its component's ``LoraConfig`` in ``metadata`` (the file's), if there is one."""
    if not is_dotted_layout(family, tensors):
        return dict(tensors)
    prefixes = _component_prefixes(family)
    sgm = _sgm_names(family)
    configs = _adapter_configs(metadata or {}, source)
    renamed: Tensors = {}
    alphas: Tensors = {}
    for key, tensor in tensors.items():
        ending = next((ending for ending in _DOTTED_ENDINGS if key.endswith(ending)), None)
        component, _, path = key.partition(".")
        if ending is None or component not in prefixes or not path:
            raise LoraFileError(
                f"{source}: key {key!r} is not a {family.title} LoRA key of the diffusers layout (expected "
                f"<{'|'.join(prefixes)}>.<module>{PEFT_DOWN}, {PEFT_UP} or {ALPHA})"
            )
        module = path[: -len(ending)]
        name = flatten(prefixes[component], _module_in_kohya(family, sgm, component, module, key, source))
        renamed[name + _DOTTED_ENDINGS[ending]] = tensor
        if component in configs and _DOTTED_ENDINGS[ending] == DOWN:
            alphas[name + ALPHA] = torch.tensor(_config_alpha(configs[component], module, tensor.shape[0]))
    return {**alphas, **renamed}  # a file's own .alpha tensors win


def _module_in_kohya(
    family: ModelFamily, sgm: SgmNames | None, component: str, module: str, key: str, source: str
) -> str:
    """A file's module path as kohya names spell it: CLIP's inside ``text_model.``, SDXL's UNet in SGM blocks."""
    spec = next((spec for spec in family.text_encoders if spec.component == component), None)
    if spec is not None:
        return text_encoder_path_in_file(module, spec.architecture)
    if sgm is None or component != family.denoiser:
        return module
    try:
        return sgm.to_sgm(module)
    except ValueError:
        raise LoraFileError(f"{source}: key {key!r} names no {family.title} UNet module") from None


def _adapter_configs(metadata: Mapping[str, str], source: str) -> dict[str, LoraConfig]:
    """Each component's peft ``LoraConfig`` from the ``lora_adapter_metadata`` entry, built as diffusers builds it."""
    raw = metadata.get(ADAPTER_METADATA)
    if not raw:
        return {}
    from peft import LoraConfig  # only for files that carry the entry: the file tools start without peft
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as error:
        raise LoraFileError(f"{source}: metadata {ADAPTER_METADATA!r} is not JSON ({error})") from None
    if not isinstance(entries, dict):
        raise LoraFileError(f"{source}: metadata {ADAPTER_METADATA!r} must be a JSON object of <component>.<kwarg>")
    kwargs: dict[str, dict[str, object]] = defaultdict(dict)
    for key, value in entries.items():
        component, _, kwarg = key.partition(".")
        if kwarg:
            kwargs[component][kwarg] = value
    configs = {}
    for component, config in kwargs.items():
        try:
            configs[component] = LoraConfig(**config)
        except (TypeError, ValueError) as error:
            raise LoraFileError(
                f"{source}: metadata {ADAPTER_METADATA!r} of {component!r} is not a peft LoraConfig ({error})"
            ) from None
    return configs


def _config_alpha(config: LoraConfig, module: str, rank: int) -> float:
    """A module's kohya alpha (scale = alpha / rank) under ``config``, its pattern matched as peft matches it."""
    from peft.utils.other import get_pattern_key

    path = module.removeprefix(TEXT_WRAPPER)
    alpha = float(config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), path), config.lora_alpha))
    return alpha * math.sqrt(rank) if config.use_rslora else alpha  # rsLoRA: scale = alpha / sqrt(rank)


def _lora_config(modules: Mapping[str, tuple[int, float]], anchored: bool) -> dict[str, object]:
    """peft ``LoraConfig`` kwargs giving each module (path -> rank, alpha) its own rank and alpha: the most common as
    ``r`` / ``lora_alpha``, the others by pattern. A denoiser's patterns are anchored (``^path``, as diffusers writes
    them: a root ``proj_out`` is also the end of block paths); a text encoder's are not, so they match whether or
    not the model has CLIP's ``text_model.`` wrapper."""
    rank = Counter(rank for rank, _ in modules.values()).most_common(1)[0][0]
    alpha = Counter(alpha for _, alpha in modules.values()).most_common(1)[0][0]
    anchor = "^" if anchored else ""
    return {
        "r": rank,
        "lora_alpha": alpha,
        "rank_pattern": {anchor + path: r for path, (r, _) in modules.items() if r != rank},
        "alpha_pattern": {anchor + path: a for path, (_, a) in modules.items() if a != alpha},
        "target_modules": sorted(modules),
    }


def _lora_only(family: ModelFamily, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    other = next((key for key in tensors if not key.endswith(_KOHYA_ENDINGS)), None)
    if other is not None:
        raise LoraFileError(
            f"{source}: key {other!r} is not a LoRA pair's; {family.title} LoRA files hold LoRA (and DoRA) modules "
            "only (set network.module = 'lora')"
        )


def adapter_tensors(
    family: ModelFamily, tensors: Mapping[str, torch.Tensor], source: str, metadata: Mapping[str, str] | None = None
) -> Tensors:
    """Any layout's file (and its metadata) -> kohya keys under the names the adapters are held by (fused BFL
    modules split)."""
    tensors = kohya_keys(family, tensors, source, metadata)
    if family.unet_lora_naming != "bfl":
        return tensors
    _lora_only(family, tensors, source)
    return modules_tensors(bfl_lora.split(split_modules(tensors, source), family.unet_lora_prefix, source))


def kohya_file_tensors(
    family: ModelFamily, tensors: Mapping[str, torch.Tensor], source: str, metadata: Mapping[str, str] | None = None
) -> Tensors:
    """Any layout's file (and its metadata) -> the kohya layout's keys and names (BFL families' separate modules
    fused)."""
    tensors = kohya_keys(family, tensors, source, metadata)
    if family.unet_lora_naming != "bfl":
        return tensors
    _lora_only(family, tensors, source)
    return modules_tensors(bfl_lora.fuse(split_modules(tensors, source), family.unet_lora_prefix, source))


def module_paths(family: ModelFamily, names: list[str], known: Mapping[str, str]) -> dict[str, str]:
    """``<component>.<module path>`` of each adapter name: ``known`` (kohya name -> that form), and for BFL
    families every transformer Linear from the BFL table."""
    if family.unet_lora_naming != "bfl":
        return dict(known)
    denoiser = {
        part: peft_path(family, None, path)
        for fused in bfl_lora.bfl_names(family.unet_lora_prefix, names)
        for part, path in zip(fused.parts, fused.paths)
    }
    return {**denoiser, **known}


def peft_tensors(
    family: ModelFamily, tensors: Mapping[str, torch.Tensor], paths: Mapping[str, str], source: str
) -> tuple[Tensors, dict[str, str]]:
    """Kohya-keyed adapter tensors -> the diffusers layout's tensors and its metadata entry (the alphas); ``paths``
    gives each name's ``<component>.<path>``."""
    out: Tensors = {}
    held: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)  # component -> path -> (rank, alpha)
    for name, weights in split_modules(tensors, source).items():
        if weights.dora_scale is not None:
            raise LoraFileError(
                f"{source}: {name} is DoRA, which the diffusers layout does not carry here; save in the kohya layout"
            )
        if name not in paths:
            raise LoraFileError(f"{source}: no {family.title} module path is known for {name!r}")
        out[paths[name] + PEFT_DOWN] = weights.down.contiguous()
        out[paths[name] + PEFT_UP] = weights.up.contiguous()
        component, _, path = paths[name].partition(".")
        alpha = weights.rank if weights.alpha is None else weights.alpha
        held[component][path.removeprefix(TEXT_WRAPPER)] = (weights.rank, float(alpha))
    configs = {
        f"{component}.{kwarg}": value
        for component, modules in held.items()
        for kwarg, value in _lora_config(modules, anchored=component == family.denoiser).items()
    }
    return out, {ADAPTER_METADATA: json.dumps(configs, indent=2, sort_keys=True)}


def file_tensors(
    family: ModelFamily,
    tensors: Mapping[str, torch.Tensor],
    save_format: str,
    paths: Mapping[str, str],
    source: str,
) -> tuple[Tensors, dict[str, str]]:
    """Adapter tensors (kohya keys, adapter names) -> a file's tensors in ``save_format`` and the metadata entries
    that layout adds."""
    if save_format == "kohya":
        return kohya_file_tensors(family, tensors, source), {}
    if save_format == "diffusers":
        return peft_tensors(family, tensors, paths, source)
    raise LoraFileError(f"unknown LoRA save format {save_format!r}; expected one of {', '.join(SAVE_FORMATS)}")


def peft_path(family: ModelFamily, encoder_index: int | None, path: str) -> str:
    """``<component>.<module path>`` of a denoiser module (``encoder_index`` None) or a text encoder's, as
    diffusers names it (CLIP modules inside ``text_model.``)."""
    if encoder_index is None:
        return f"{family.denoiser}.{path}"
    spec = family.text_encoders[encoder_index]
    return f"{spec.component}.{text_encoder_path_in_file(path, spec.architecture)}"


def reference_paths(family: ModelFamily, names: list[str]) -> dict[str, str]:
    """``<component>.<module path>`` of the adapter ``names`` when no model is at hand (the tools): modules of the
    family's full-size reference model, built on the meta device (the denoiser of BFL families from the BFL table)."""
    from library.models.single_file import reference_configs
    from library.models.single_file.components import instantiate

    configs = reference_configs(family.name)
    paths: dict[str, str] = {}
    with torch.device("meta"):
        for index, spec in enumerate(family.text_encoders):
            if any(name.startswith(spec.lora_prefix) for name in names):
                encoder = instantiate(spec.architecture, configs[spec.component])
                paths.update(_linear_paths(encoder, lambda path: text_encoder_name(spec, path), family, index))
        if family.unet_lora_naming != "bfl" and any(name.startswith(family.unet_lora_prefix) for name in names):
            denoiser = instantiate(family.denoiser_class, configs[family.denoiser])
            namer = LoraNamer(family, denoiser.config)
            paths.update(_linear_paths(denoiser, namer.unet, family, None))
    return module_paths(family, names, paths)


def _linear_paths(
    root: nn.Module, name_of: Callable[[str], str], family: ModelFamily, encoder_index: int | None
) -> dict[str, str]:
    return {
        name_of(path): peft_path(family, encoder_index, path)
        for path, module in root.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    }
