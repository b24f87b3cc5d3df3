"""What every tool shares: its error type, reading LoRAs and base models, and writing results with metadata.

Each tool module exposes ``add_parser(subparsers)`` and a ``run(args) -> int`` the dispatcher calls; failures are
:class:`ToolError` (or the library's own file errors), which the dispatcher prints as one line.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from library.models.checkpoint_io import read_state_dict
from library.models.families import FAMILIES, FAMILY_NAMES, FLUX1_DEV, SD1, SD2, SDXL, ModelFamily
from library.models.loader import BaseModel, load_base_model
from library.models.pipeline import component_configs, component_modules
from library.models.single_file import save_original_checkpoint
from library.networks import split_modules, write_lora_file
from library.networks.bundled_embeddings import bundle_tensors, split_bundled
from library.networks.hashes import LEGACY_HASH_KEY, MODEL_HASH_KEY
from library.networks.lokr import LokrWeights, split_lokr
from library.networks.lora_file import ModuleWeights, module_tensors
from library.networks.lora_layouts import ADAPTER_METADATA, kohya_file_tensors
from library.tools.loha import HadaWeights, split_hada

TOOL_KEY = "furnace.tool"  # which tool wrote a file, and from what (a JSON recipe)

AdapterModule = ModuleWeights | HadaWeights | LokrWeights


class ToolError(ValueError):
    """A problem with a tool's input; ``str()`` is the one line shown to the user."""


def add_family_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--family", default="auto", choices=("auto", *FAMILY_NAMES), help="the base model's family (default: detect)"
    )


def existing_path(path: Path, what: str) -> Path:
    """``path`` if it exists, else a ToolError naming ``what`` it should have been."""
    if not path.exists():
        raise ToolError(f"{path}: {what} not found")
    return path


def check_output(path: Path, suffix: str = ".safetensors") -> Path:
    """An output path with the right extension whose folder exists (created if needed)."""
    if path.suffix.lower() != suffix:
        raise ToolError(f"{path}: the output must be a {suffix} file")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def parse_ratios(ratios: list[float] | None, count: int, what: str) -> list[float]:
    """One ratio per input (default 1.0 each); a wrong count is an error naming the inputs."""
    if ratios is None:
        return [1.0] * count
    if len(ratios) != count:
        raise ToolError(f"--ratios: got {len(ratios)} value(s) for {count} {what}; give one per {what[:-1]}")
    return list(ratios)


def read_adapter_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA / LoCon / DoRA / LoHa / LoKr ``.safetensors`` file."""
    if not path.is_file():
        raise ToolError(f"LoRA file {path} does not exist; check the path")
    if path.suffix.lower() != ".safetensors":
        raise ToolError(f"{path}: LoRA files are read as .safetensors only")
    return read_state_dict(path)


def split_adapter_modules(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, AdapterModule]:
    """Every module of an adapter file: LyCORIS LoHa and LoKr modules by their keys, the rest kohya LoRA pairs."""
    rest, hada = split_hada(tensors, source)
    rest, lokr = split_lokr(rest, source)
    return {**split_modules(rest, source), **hada, **lokr}


def read_lora_modules(
    path: Path,
) -> tuple[dict[str, AdapterModule], dict[str, str], dict[str, dict[str, torch.Tensor]]]:
    """The modules (kohya LoRA pairs, LoHa and LoKr modules, in the kohya layout's names), metadata and bundled
    embeddings (token -> embedding-file tensors; pivotal tuning's) of an adapter file in either layout."""
    tensors, metadata = read_adapter_file(path)
    adapter, bundled = split_bundled(tensors)
    return file_modules(adapter, metadata, str(path))[0], metadata, bundled


def only_lora_modules(modules: Mapping[str, AdapterModule], path: Path, action: str) -> dict[str, ModuleWeights]:
    """``modules`` when all are low-rank pairs; a LoHa or LoKr module is refused (there are no factors to
    ``action``)."""
    other = next(((name, w) for name, w in modules.items() if not isinstance(w, ModuleWeights)), None)
    if other is not None:
        name, weights = other
        raise ToolError(
            f"{path}: module {name} is {weights.KIND} ({weights.KEYS} keys), which has no LoRA factors to {action}; "
            "merge it into a model with merge-into instead"
        )
    return dict(modules)  # type: ignore[arg-type]


def is_conv3(weights: ModuleWeights) -> bool:
    """Whether a module adapts a 3x3 (non-pointwise) conv, which LoCon ranks separately (conv_dim)."""
    return weights.down.ndim == 4 and tuple(weights.down.shape[2:]) != (1, 1)


_FLUX_NAMES = ("lora_unet_double_blocks_", "lora_unet_single_blocks_", "lora_unet_transformer_blocks_",
               "lora_unet_single_transformer_blocks_")
_FLUX_COMPONENTS = ("transformer", "diffusion_model")  # the diffusers layout's, ai-toolkit's and ComfyUI's prefixes


def lora_family(keys: list[str], metadata: Mapping[str, str]) -> ModelFamily | None:
    """The base-model family a LoRA was made for, from its tensor keys and metadata: the modelspec architecture,
    then ss_base_model_version, then the key names (FLUX.1 files by their transformer names or prefixes, SDXL's by
    its second text encoder or SGM blocks)."""
    architecture = metadata.get("modelspec.architecture", "")
    version = metadata.get("ss_base_model_version", "")
    for family in FAMILIES.values():
        if architecture and family.lora_architecture == architecture:
            return family
    for family in FAMILIES.values():
        if version and family.ss_base_model_version == version:
            return family
    names = [key.split(".", 1)[0] for key in keys]
    if any(name.startswith(_FLUX_NAMES) or name in _FLUX_COMPONENTS for name in names):
        return FLUX1_DEV
    if any(name.startswith(("lora_te1_", "lora_te2_")) or name == "text_encoder_2" for name in names):
        return SDXL
    if any(name.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_")) for name in names):
        return SDXL
    if metadata.get("ss_v2") == "True":
        return SD2
    return SD1 if names else None


def file_modules(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str
) -> tuple[dict[str, AdapterModule], ModelFamily | None]:
    """An adapter file's modules in the kohya layout's names (a diffusers-layout file converted; FLUX.1's
    separate q, k, v fused as its kohya files hold them), and the family it was made for."""
    family = lora_family(list(tensors), metadata)
    if family is not None:
        tensors = kohya_file_tensors(family, tensors, source, metadata)
    return split_adapter_modules(tensors, source), family


def derived_metadata(source: Mapping[str, str], recipe: Mapping[str, object], **updates: str) -> dict[str, str]:
    """A source file's metadata carried to a derived file: old hashes and the diffusers layout's alphas (the derived
    file's writer adds its own; a kohya file with them is refused by diffusers) dropped, the recipe and updates
    added."""
    dropped = (MODEL_HASH_KEY, LEGACY_HASH_KEY, ADAPTER_METADATA)
    metadata = {key: value for key, value in source.items() if key not in dropped}
    metadata.update(updates)
    metadata[TOOL_KEY] = json.dumps(recipe)
    metadata["modelspec.date"] = datetime.datetime.now().replace(microsecond=0).isoformat()
    return metadata


def _rank_and_alpha(modules: list[ModuleWeights]) -> tuple[str, str] | None:
    """sd-scripts' summary of modules' rank and alpha: the shared values, or "Dynamic" when they vary."""
    if not modules:
        return None
    ranks = {weights.rank for weights in modules}
    alphas = {float(weights.alpha if weights.alpha is not None else weights.rank) for weights in modules}
    return (
        str(ranks.pop()) if len(ranks) == 1 else "Dynamic",
        str(alphas.pop()) if len(alphas) == 1 else "Dynamic",
    )


def network_summary(modules: Mapping[str, ModuleWeights], metadata: Mapping[str, str]) -> dict[str, str]:
    """ss_network_dim/alpha from the Linear/1x1 modules, conv_dim/conv_alpha in ss_network_args from the 3x3 ones."""
    try:
        args = json.loads(metadata.get("ss_network_args") or "{}")
    except json.JSONDecodeError:
        args = {}
    if not isinstance(args, dict):
        args = {}
    args.pop("conv_dim", None)
    args.pop("conv_alpha", None)
    summary: dict[str, str] = {}
    linear = _rank_and_alpha([w for w in modules.values() if not is_conv3(w)])
    if linear:
        summary["ss_network_dim"], summary["ss_network_alpha"] = linear
    conv = _rank_and_alpha([w for w in modules.values() if is_conv3(w)])
    if conv:
        args["conv_dim"], args["conv_alpha"] = conv
    summary["ss_network_args"] = json.dumps(args)
    return summary


def write_lora(
    path: Path,
    modules: Mapping[str, ModuleWeights],
    metadata: Mapping[str, str],
    dtype: torch.dtype | None = None,
    family: ModelFamily | None = None,
    embeddings: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> dict[str, str]:
    """Write modules as a kohya LoRA file (atomic, with hashes); the network dims in the metadata follow them.

    With ``family``, modules named as adapters are held (FLUX.1's separate q, k, v) are laid out as its kohya
    files name them (fused). ``embeddings`` (token -> embedding-file tensors, pivotal tuning's) are bundled as they
    are, in their own dtype."""
    tensors: dict[str, torch.Tensor] = {}
    for name, weights in modules.items():
        tensors.update(module_tensors(name, weights, dtype))
    if family is not None:
        tensors = kohya_file_tensors(family, tensors, str(path))
    for token, vectors in (embeddings or {}).items():
        tensors.update(bundle_tensors(token, vectors))
    return write_lora_file(path, tensors, {**metadata, **network_summary(modules, metadata)})


def kept_embeddings(embeddings: Mapping[str, object]) -> str:
    """The end of a tool's summary line naming the bundled embeddings it carried over (none: nothing)."""
    return f", bundled embedding(s) kept: {', '.join(sorted(embeddings))}" if embeddings else ""


def load_model(path: Path, family: str = "auto") -> BaseModel:
    """A base model (single file, .ckpt or diffusers folder), in float32 for exact arithmetic."""
    return load_base_model(existing_path(path, "base model"), family=family, dtype=torch.float32)


def checkpoint_metadata(title: str, recipe: Mapping[str, object]) -> dict[str, str]:
    """modelspec entries of a tool's checkpoint beyond the family defaults the writer adds."""
    return {
        "modelspec.title": title,
        "modelspec.date": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "modelspec.description": json.dumps(recipe),
        TOOL_KEY: json.dumps(recipe),
    }


def write_checkpoint(
    path: Path,
    model: BaseModel,
    recipe: Mapping[str, object],
    dtype: torch.dtype | None = None,
) -> None:
    """Write ``model`` as an original-layout single file with modelspec metadata and the tool's recipe."""
    modules = component_modules(model.family, model.unet, model.vae, model.text_encoders)
    save_original_checkpoint(
        path,
        model.family.name,
        {name: module.state_dict() for name, module in modules.items()},
        component_configs(modules),
        metadata=checkpoint_metadata(path.stem, recipe),
        dtype=dtype,
    )
