"""Load a base model — a diffusers folder, a single original-layout ``.safetensors`` (FLUX.1: also split files), or a
``.ckpt`` — offline.

Whatever the source, the result is the same :class:`BaseModel`: diffusers/transformers modules, tokenizers, the
training noise schedule and the family record. Every failure is a :class:`ModelLoadError` whose message names what
was looked for and which layouts are accepted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from library.models.checkpoint_io import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, read_state_dict
from library.models.detect import detect_diffusers_family, detect_original_family
from library.models.errors import ModelLoadError
from library.models.families import ModelFamily, get_family
from library.models.fp8 import fp8_dtype, fp8_weight_keys, store_in_fp8
from library.models.family_tokenizers import load_tokenizer
from library.models.joined_tensors import JoinedTensors, split_file_parts
from library.models.tensor_stream import DtypeFor, StreamedTensors

logger = logging.getLogger(__name__)

ACCEPTED_LAYOUTS = (
    "a diffusers folder (model_index.json with unet/ or transformer/, vae/, text_encoder/ sub-folders), "
    "a single original-layout .safetensors file (FLUX.1: the transformer file plus model.ae, model.clip_l and "
    "model.t5xxl, or one ComfyUI-style checkpoint), or a .ckpt file"
)


@dataclass
class BaseModel:
    """A loaded base model and everything training needs to know about it.

    ``unet`` is the family's denoiser: a ``UNet2DConditionModel`` for Stable Diffusion, the transformer of a DiT
    family (``family.denoiser`` names its component)."""

    family: ModelFamily
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]
    tokenizers: list
    noise_scheduler: object
    source: Path
    source_format: str  # "diffusers", "safetensors" or "ckpt"
    metadata: dict[str, str] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """Human-readable summary: what was loaded and the family facts training will use."""
        lines = [
            f"model: {self.source} ({self.source_format})",
            f"family: {self.family.name} — {self.family.title}",
            f"prediction: {self.family.prediction_type}, latent scale {self.family.latent_scaling_factor}, "
            f"default resolution {self.family.default_resolution}",
            f"{self.family.denoiser}: {_count_parameters(self.unet):,} parameters",
            f"vae: {_count_parameters(self.vae):,} parameters",
        ]
        for spec, encoder in zip(self.family.text_encoders, self.text_encoders):
            lines.append(
                f"{spec.component}: {type(encoder).__name__}, {encoder.config.num_hidden_layers} layers, "
                f"hidden {encoder.config.hidden_size}, {_count_parameters(encoder):,} parameters"
            )
        lines.append(f"clip_skip: {self.family.clip_skip_meaning}")
        return lines


def _count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@dataclass(frozen=True)
class _Dtypes:
    """Storage dtypes of a load: the VAE's may differ (SD VAEs are kept fp32 while the rest is bf16); with ``fp8``
    the Linear and Conv2d weights of the denoiser and text encoders are stored in fp8 and up-cast to ``default`` per
    layer (``models/fp8.py``)."""

    default: torch.dtype
    vae: torch.dtype
    fp8: bool = False

    def of(self, component: str) -> torch.dtype:
        return self.vae if component == "vae" else self.default

    def plan(self, component: str, module: torch.nn.Module) -> DtypeFor:
        """Each state-dict key's storage dtype in ``module`` (the component, built empty)."""
        dtype = self.of(component)
        if not self.fp8 or component == "vae":
            return lambda key: dtype
        fp8_keys, storage = fp8_weight_keys(module), fp8_dtype()
        return lambda key: storage if key in fp8_keys else dtype


def load_base_model(
    path: str | Path,
    family: str = "auto",
    vae: str | Path | None = None,
    config_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype | None = None,
    map_weights: bool = False,
    split_files: Mapping[str, str | Path | None] | None = None,
    fp8: bool = False,
) -> BaseModel:
    """Load a base model from ``path``; ``family="auto"`` detects it, a family name forces it.

    ``split_files`` names the separate files of a family that comes split, by sd-scripts' option names (FLUX.1:
    ``ae``, ``clip_l``, ``t5xxl``); each is needed unless ``path`` holds that component itself.

    Weights are stored in ``dtype`` (the VAE in ``vae_dtype``, default ``dtype``) as they are read, so a bf16 load
    of an fp32 file never holds the fp32 copy of a whole component. ``map_weights`` memory-maps the weights of a
    ``.safetensors`` file that are kept in their stored dtype instead of reading them (no copy, no wait): only for
    a base that stays frozen and is never saved as a model, like a LoRA run's (see ``tensor_stream``). ``fp8``
    stores the denoiser's and text encoders' Linear and Conv2d weights in float8 (from a diffusers folder each is
    read straight into it; a single file is converted in ``dtype`` first) and up-casts them to ``dtype`` per layer
    (frozen weights only: see ``models/fp8.py``).
    """
    source = Path(path).expanduser()
    check_exists(source)
    dtypes = _Dtypes(dtype, vae_dtype or dtype, fp8)
    if source.is_dir():
        model = _load_diffusers_folder(source, family, dtypes, map_weights)
    else:
        config_path = None if config_dir is None else Path(config_dir)
        model = _load_single_file(source, family, config_path, dtypes, map_weights, split_files or {})
    if vae is not None:
        from library.models.vae import load_vae

        model.vae = load_vae(Path(vae).expanduser(), model.family, dtypes.vae)
    for module in (model.unet, model.vae, *model.text_encoders):
        module.eval()
    return model


def check_exists(source: Path) -> None:
    """Refuse a missing model path, with a hint when it looks like a model-hub id (nothing is downloaded)."""
    if source.exists():
        return
    hint = ""
    if not source.is_absolute() and str(source).count("/") == 1 and "." not in source.name:
        hint = (
            " It looks like a model-hub id: Furnace never downloads; download the model yourself and point "
            "model.pretrained_model_name_or_path at the local folder or file."
        )
    raise ModelLoadError(f"model not found: {source}. Expected {ACCEPTED_LAYOUTS}.{hint}")


def _noise_scheduler(family: ModelFamily):
    import diffusers

    return getattr(diffusers, family.scheduler_class)(**dict(family.scheduler_config))


def component_classes(family: ModelFamily) -> dict[str, str]:
    """Component name -> module class, denoiser and VAE first."""
    classes = {family.denoiser: family.denoiser_class, "vae": "AutoencoderKL"}
    return classes | {spec.component: spec.architecture for spec in family.text_encoders}


def _load_diffusers_folder(folder: Path, family_name: str, dtypes: _Dtypes, map_weights: bool) -> BaseModel:
    if not (folder / "model_index.json").is_file():
        present = sorted(p.name for p in folder.iterdir())[:12]
        raise ModelLoadError(
            f"{folder}: not a diffusers model folder (no model_index.json; found: {', '.join(present) or 'nothing'})."
            f" Expected {ACCEPTED_LAYOUTS}."
        )
    family = detect_diffusers_family(folder) if family_name == "auto" else get_family(family_name)
    classes = component_classes(family)
    for sub in classes:
        if not (folder / sub / "config.json").is_file():
            raise ModelLoadError(f"{folder / sub}: missing (or no config.json); the {family.name} folder needs it")
    modules = {
        name: _folder_component(folder, name, model_class, dtypes, map_weights)
        for name, model_class in classes.items()
    }
    return _base_model(family, modules, folder, folder, "diffusers")


def _base_model(
    family: ModelFamily,
    modules: dict[str, torch.nn.Module],
    source: Path,
    tokenizer_folder: Path | None,
    source_format: str,
    metadata: dict[str, str] | None = None,
) -> BaseModel:
    encoders = [modules[spec.component] for spec in family.text_encoders]
    return BaseModel(
        family=family,
        unet=modules[family.denoiser],
        vae=modules["vae"],
        text_encoders=encoders,
        tokenizers=[
            load_tokenizer(spec, encoder, tokenizer_folder) for spec, encoder in zip(family.text_encoders, encoders)
        ],
        noise_scheduler=_noise_scheduler(family),
        source=source,
        source_format=source_format,
        metadata=metadata or {},
    )


_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def _folder_component(
    folder: Path, name: str, model_class: str, dtypes: _Dtypes, map_weights: bool
) -> torch.nn.Module:
    """One component of a diffusers folder, streamed from its single ``.safetensors`` file in its storage dtypes
    (each tensor read straight into its own); other weight layouts (sharded, ``.bin``, variants, legacy key names)
    go through ``from_pretrained``."""
    config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
    weights = next((folder / name / file for file in _WEIGHT_FILES if (folder / name / file).is_file()), None)
    if weights is not None:
        module = _empty_module(model_class, config)
        plan = dtypes.plan(name, module)
        with StreamedTensors(weights, plan, map_weights) as tensors:
            try:
                return _assign(name, module, tensors, plan, dtypes)
            except ValueError as error:
                logger.debug("%s: %s; loading it with from_pretrained", weights, error)
    return _with_fp8(name, _from_pretrained(folder, name, model_class, dtypes.of(name)), dtypes)


def _from_pretrained(folder: Path, name: str, model_class: str, dtype: torch.dtype) -> torch.nn.Module:
    import diffusers
    import transformers

    if hasattr(diffusers, model_class):
        return getattr(diffusers, model_class).from_pretrained(
            folder, subfolder=name, torch_dtype=dtype, local_files_only=True
        )
    return getattr(transformers, model_class).from_pretrained(
        folder, subfolder=name, dtype=dtype, local_files_only=True
    )


def _with_fp8(name: str, module: torch.nn.Module, dtypes: _Dtypes) -> torch.nn.Module:
    """``module`` with its fp8 layers up-casting to the compute dtype, when the load stores them in fp8."""
    if dtypes.fp8 and name != "vae":
        store_in_fp8(module, dtypes.default)
    return module


def _load_single_file(
    path: Path,
    family_name: str,
    config_dir: Path | None,
    dtypes: _Dtypes,
    map_weights: bool,
    split_files: Mapping[str, str | Path | None],
) -> BaseModel:
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise ModelLoadError(f"{path}: unsupported file type {path.suffix!r}. Expected {ACCEPTED_LAYOUTS}.")
    if suffix in SAFETENSORS_SUFFIXES:
        with StreamedTensors(path) as header:
            family = _file_family(path, family_name, header.keys(), header.metadata)
            parts = file_parts(path, family, split_files, set(header.keys()))
        with JoinedTensors(parts, map_uncast=map_weights) as tensors:
            tensors.dtype_for = _dtype_by_component(family, dtypes)
            configs, state_dicts = _convert(path, family, family_name, tensors, tensors.shapes)
        metadata = tensors.metadata
    else:
        state_dict, metadata = read_state_dict(path)
        family = _file_family(path, family_name, state_dict.keys(), metadata)
        configs, state_dicts = _convert(path, family, family_name, state_dict, state_dict)
        del state_dict
    if config_dir is not None:
        configs.update(_configs_from_folder(config_dir, configs))
    classes = component_classes(family)
    modules = {}
    for name in list(state_dicts):
        try:
            module = _empty_module(classes[name], configs[name])
            modules[name] = _assign(name, module, state_dicts.pop(name), dtypes.plan(name, module), dtypes)
        except ValueError as error:
            raise ModelLoadError(
                f"{path}: {name} weights do not fit the inferred architecture ({error}); if this is a "
                "non-standard model, set model.config_dir to a diffusers folder with matching configs"
            ) from None
    source_format = "safetensors" if suffix in SAFETENSORS_SUFFIXES else "ckpt"
    return _base_model(family, modules, path, config_dir, source_format, metadata)


def file_parts(
    path: Path, family: ModelFamily, split_files: Mapping[str, str | Path | None], keys: set[str]
) -> list[tuple[Path, str]]:
    """The model file, plus the split files of a family that comes split (each under its component's prefix)."""
    from library.models.single_file.components import component_layouts

    if not family.split_file_keys:
        return [(path, "")]
    prefixes = {layout.name: layout.prefix for layout in component_layouts(family.name)}
    options = {"": prefixes[family.denoiser]}
    if family.vae_split_file_key:
        options[family.vae_split_file_key] = prefixes["vae"]
    options |= {spec.split_file_key: prefixes[spec.component] for spec in family.text_encoders if spec.split_file_key}
    return split_file_parts(path, options, split_files, keys)


def _file_family(path: Path, family_name: str, keys, metadata: dict[str, str]) -> ModelFamily:
    return detect_original_family(path, keys, metadata) if family_name == "auto" else get_family(family_name)


def _dtype_by_component(family: ModelFamily, dtypes: _Dtypes) -> DtypeFor:
    """Each original-layout key's storage dtype, by the component whose prefix it carries."""
    from library.models.single_file.components import component_layouts

    prefixes = [(layout.prefix, dtypes.of(layout.name)) for layout in component_layouts(family.name)]
    return lambda key: next((dtype for prefix, dtype in prefixes if key.startswith(prefix)), None)


def _convert(path: Path, family: ModelFamily, family_name: str, state_dict, shapes):
    """(configs, state dicts) per component; a layout mismatch becomes a :class:`ModelLoadError`."""
    from library.models.single_file import original_to_diffusers

    try:
        return original_to_diffusers(family.name, state_dict, shapes)
    except ValueError as error:
        forced = "" if family_name == "auto" else f' (model.family is "{family_name}"; "auto" detects the family)'
        raise ModelLoadError(f"{path}: does not match the {family.name} layout{forced}: {error}") from None


def _configs_from_folder(config_dir: Path, wanted: dict[str, dict]) -> dict[str, dict]:
    """Component configs from a diffusers folder, for single files whose architecture cannot be inferred."""
    configs = {}
    for name in wanted:
        config_file = config_dir / name / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"model.config_dir: {config_file} is missing")
        configs[name] = json.loads(config_file.read_text(encoding="utf-8"))
    return configs


def _empty_module(model_class: str, config: dict) -> torch.nn.Module:
    """A component built from its config without a random init (empty weights)."""
    from accelerate import init_empty_weights

    from library.models.single_file.components import instantiate

    clean = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    with init_empty_weights():
        return instantiate(model_class, clean)


def _assign(
    name: str, module: torch.nn.Module, state_dict: Mapping, plan: DtypeFor, dtypes: _Dtypes
) -> torch.nn.Module:
    """Assign the checkpoint's tensors, each in its planned dtype, to the empty ``module`` (a streamed mapping is
    read one tensor at a time here); ValueError names keys that do not fit."""
    tensors = {key: value.to(plan(key)) if value.is_floating_point() else value for key, value in state_dict.items()}
    tensors |= _tied_copies(module, tensors)
    problems = sorted(set(module.state_dict()).symmetric_difference(tensors))[:3]
    if problems:
        raise ValueError(f"e.g. {', '.join(problems)}")
    module.load_state_dict(tensors, strict=True, assign=True)
    return _with_fp8(name, module, dtypes)


def _tied_copies(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors for the other name of a tied pair (T5's input embedding is ``shared.weight``): files and
    ``save_pretrained`` keep one name of a tied pair. transformers lists the pairs as target -> source."""
    tied = getattr(module, "_tied_weights_keys", None)
    copies = {}
    for target, source in (tied.items() if isinstance(tied, dict) else ()):
        for want, have in ((target, source), (source, target)):
            if want not in tensors and have in tensors:
                copies[want] = tensors[have]
    return copies
