"""Load a base model — a diffusers folder, a single original-layout ``.safetensors``, or a ``.ckpt`` — offline.

Whatever the source, the result is the same :class:`BaseModel`: diffusers/transformers modules, tokenizers, the
training noise schedule and the family record. Every failure is a :class:`ModelLoadError` whose message names what
was looked for and which layouts are accepted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from library.models.checkpoint_io import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, read_state_dict
from library.models.detect import detect_diffusers_family, detect_original_family
from library.models.errors import ModelLoadError
from library.models.families import ModelFamily, get_family
from library.models.tokenizer import build_clip_tokenizer

logger = logging.getLogger(__name__)

ACCEPTED_LAYOUTS = (
    "a diffusers folder (model_index.json with unet/, vae/, text_encoder/ sub-folders), "
    "a single original-layout .safetensors file, or a .ckpt file"
)


@dataclass
class BaseModel:
    """A loaded Stable Diffusion base model and everything training needs to know about it."""

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
            f"unet: {_count_parameters(self.unet):,} parameters",
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


def load_base_model(
    path: str | Path,
    family: str = "auto",
    vae: str | Path | None = None,
    config_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> BaseModel:
    """Load a base model from ``path``; ``family="auto"`` detects it, a family name forces it."""
    source = Path(path).expanduser()
    _check_exists(source)
    if source.is_dir():
        model = _load_diffusers_folder(source, family, dtype)
    else:
        model = _load_single_file(source, family, None if config_dir is None else Path(config_dir), dtype)
    if vae is not None:
        from library.models.vae import load_vae

        model.vae = load_vae(Path(vae).expanduser(), model.family, dtype)
    for module in (model.unet, model.vae, *model.text_encoders):
        module.eval()
    return model


def _check_exists(source: Path) -> None:
    if source.exists():
        return
    hint = ""
    if not source.is_absolute() and str(source).count("/") == 1 and "." not in source.name:
        hint = (
            " It looks like a model-hub id: Furnace never downloads; download the model yourself and point "
            "model.pretrained_model_name_or_path at the local folder or file."
        )
    raise ModelLoadError(f"model not found: {source}. Expected {ACCEPTED_LAYOUTS}.{hint}")


def _load_diffusers_folder(folder: Path, family_name: str, dtype: torch.dtype) -> BaseModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if not (folder / "model_index.json").is_file():
        present = sorted(p.name for p in folder.iterdir())[:12]
        raise ModelLoadError(
            f"{folder}: not a diffusers model folder (no model_index.json; found: {', '.join(present) or 'nothing'})."
            f" Expected {ACCEPTED_LAYOUTS}."
        )
    family = detect_diffusers_family(folder) if family_name == "auto" else get_family(family_name)
    for sub in ("unet", "vae", *(spec.component for spec in family.text_encoders)):
        if not (folder / sub / "config.json").is_file():
            raise ModelLoadError(f"{folder / sub}: missing (or no config.json); the {family.name} folder needs it")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype, local_files_only=True)
    text_encoders, tokenizers = [], []
    for spec in family.text_encoders:
        encoder_class = (
            CLIPTextModelWithProjection if spec.architecture == "CLIPTextModelWithProjection" else CLIPTextModel
        )
        text_encoders.append(
            encoder_class.from_pretrained(folder, subfolder=spec.component, dtype=dtype, local_files_only=True)
        )
        tokenizers.append(_folder_tokenizer(folder / spec.component.replace("text_encoder", "tokenizer"), spec))
    return BaseModel(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=tokenizers,
        noise_scheduler=DDPMScheduler(**dict(family.scheduler_config)),
        source=folder,
        source_format="diffusers",
    )


def _folder_tokenizer(tokenizer_dir: Path, spec):
    """The folder's own tokenizer when present, else the built-in CLIP vocabulary with the family's padding."""
    from transformers import CLIPTokenizer

    if tokenizer_dir.is_dir():
        return CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    logger.info("%s not found; using the built-in CLIP vocabulary", tokenizer_dir)
    return build_clip_tokenizer(pad_token=spec.pad_token)


def _load_single_file(path: Path, family_name: str, config_dir: Path | None, dtype: torch.dtype) -> BaseModel:
    from diffusers import DDPMScheduler

    from library.models.single_file import original_to_diffusers

    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise ModelLoadError(f"{path}: unsupported file type {path.suffix!r}. Expected {ACCEPTED_LAYOUTS}.")
    state_dict, metadata = read_state_dict(path)
    family = (
        detect_original_family(path, state_dict.keys(), metadata)
        if family_name == "auto"
        else get_family(family_name)
    )
    try:
        configs, state_dicts = original_to_diffusers(family.name, state_dict)
    except ValueError as error:
        forced = "" if family_name == "auto" else f' (model.family is "{family_name}"; "auto" detects the family)'
        raise ModelLoadError(f"{path}: does not match the {family.name} layout{forced}: {error}") from None
    del state_dict
    if config_dir is not None:
        configs.update(_configs_from_folder(config_dir, configs))
    modules = {name: _instantiate(name, configs[name], state_dicts[name], dtype, path) for name in state_dicts}
    return BaseModel(
        family=family,
        unet=modules["unet"],
        vae=modules["vae"],
        text_encoders=[modules[spec.component] for spec in family.text_encoders],
        tokenizers=[build_clip_tokenizer(pad_token=spec.pad_token) for spec in family.text_encoders],
        noise_scheduler=DDPMScheduler(**dict(family.scheduler_config)),
        source=path,
        source_format="safetensors" if suffix in SAFETENSORS_SUFFIXES else "ckpt",
        metadata=metadata,
    )


def _configs_from_folder(config_dir: Path, wanted: dict[str, dict]) -> dict[str, dict]:
    """Component configs from a diffusers folder, for single files whose architecture cannot be inferred."""
    configs = {}
    for name in wanted:
        config_file = config_dir / name / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"model.config_dir: {config_file} is missing")
        configs[name] = json.loads(config_file.read_text(encoding="utf-8"))
    return configs


def _instantiate(name: str, config: dict, state_dict: dict, dtype: torch.dtype, source: Path) -> torch.nn.Module:
    """Build a component without a random init (empty weights) and assign the checkpoint's tensors to it."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    clean = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    with init_empty_weights():
        if name == "unet":
            module = UNet2DConditionModel.from_config(clean)
        elif name == "vae":
            module = AutoencoderKL.from_config(clean)
        else:
            with_projection = "CLIPTextModelWithProjection" in config.get("architectures", [])
            encoder_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
            module = encoder_class(CLIPTextConfig(**clean))
    tensors = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state_dict.items()}
    result = module.load_state_dict(tensors, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        problems = (result.missing_keys + result.unexpected_keys)[:3]
        raise ModelLoadError(
            f"{source}: {name} weights do not fit the inferred architecture (e.g. {', '.join(problems)}); "
            "if this is a non-standard model, set model.config_dir to a diffusers folder with matching configs"
        )
    return module
