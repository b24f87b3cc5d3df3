"""'inspect': what a model file is — a LoRA (family, kind, rank per module, metadata, hashes), a textual-inversion
embedding (vectors, widths, which text encoders), an A1111 hypernetwork (.pt or .safetensors) or a checkpoint.

LoRA hashes are recomputed and compared with the stored ones; ``--json`` prints everything machine-readably.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from safetensors import safe_open

from library.models.checkpoint_io import read_state_dict
from library.models.detect import detect_diffusers_family, detect_original_family
from library.models.families import FAMILIES
from library.networks import verify_hashes
from library.networks.bundled_embeddings import is_bundled, split_bundled
from library.networks.embedding_file import SDXL_ENCODER_KEYS, SINGLE_ENCODER_KEY, EmbeddingFileError, read_embedding_file
from library.networks.hypernetwork_file import PT_SUFFIX, is_hypernetwork
from library.networks.lokr import LOKR_SUFFIXES, LokrWeights
from library.networks.lora_file import ModuleWeights
from library.networks.lora_layouts import PEFT_DOWN, PEFT_UP
from library.tools.common import AdapterModule, ToolError, existing_path, file_modules, is_conv3
from library.tools.hypernetwork_report import format_hypernetwork, hypernetwork_report
from library.tools.loha import HADA_SUFFIXES

_LORA_KEY_ENDINGS = (
    ".lora_down.weight", ".lora_up.weight", ".alpha", ".dora_scale", PEFT_DOWN, PEFT_UP, *HADA_SUFFIXES, *LOKR_SUFFIXES
)
_EMA_PREFIX = "model_ema."


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="show what a LoRA, embedding, hypernetwork or checkpoint file holds",
                                   description=__doc__)
    parser.add_argument("file", type=Path, metavar="FILE",
                        help="LoRA or embedding .safetensors, A1111 .pt embedding, hypernetwork .pt/.safetensors, "
                             "checkpoint or diffusers folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--modules", action="store_true", help="list every LoRA module with its rank")
    parser.set_defaults(run=run)


def _lycoris_kinds(modules: dict[str, AdapterModule]) -> list[str]:
    return sorted({w.KIND for w in modules.values() if not isinstance(w, ModuleWeights)})


def lora_kind(modules: dict[str, AdapterModule]) -> str:
    """LoRA, LoCon (3x3 conv modules), LoHa (hada_* modules) or LoKr (lokr_* modules), and/or DoRA (magnitudes)."""
    lycoris = _lycoris_kinds(modules)
    if lycoris:
        kind = " + ".join(lycoris)
    else:
        kind = "LoCon" if any(is_conv3(w) for w in modules.values()) else "LoRA"
    return f"{kind} + DoRA" if any(w.dora_scale is not None for w in modules.values()) else kind


def lokr_factor(metadata: dict[str, str]) -> int | None:
    """The LoKr factor a file was trained with, from its ``ss_network_args`` (LyCORIS's default -1 when they name
    algo lokr but no factor); None when the metadata does not say."""
    try:
        args = json.loads(metadata.get("ss_network_args") or "")
    except json.JSONDecodeError:
        return None
    if not isinstance(args, dict) or str(args.get("algo", "")).lower() != "lokr":
        return None
    try:
        return int(args.get("factor", -1))
    except (TypeError, ValueError):
        return None


def _rank_label(rank: int | None) -> str:
    return "full" if rank is None else str(rank)  # a LoKr module whose factors are both stored whole


def lora_report(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, object]:
    modules, family = file_modules(tensors, metadata, str(path))
    _, bundled = split_bundled(tensors)
    ranks = {name: weights.rank for name, weights in modules.items()}
    by_rank = sorted(Counter(ranks.values()).items(), key=lambda item: (item[0] is None, item[0] or 0))
    alphas = {name: weights.alpha for name, weights in modules.items()}
    has_hashes = "sshs_model_hash" in metadata
    return {
        "file": str(path),
        "type": "lora",
        "family": family.name if family else "unknown",
        "layout": "diffusers" if any(key.endswith((PEFT_DOWN, PEFT_UP)) for key in tensors) else "kohya",
        "kind": lora_kind(modules),
        "algo": "+".join(kind.lower() for kind in _lycoris_kinds(modules)) or "lora",  # LyCORIS's algo names
        "factor": lokr_factor(metadata) if any(isinstance(w, LokrWeights) for w in modules.values()) else None,
        "key_count": len(tensors),
        "module_count": len(modules),
        "unet_modules": sum(name.startswith("lora_unet_") for name in modules),
        "text_encoder_modules": sum(name.startswith("lora_te") for name in modules),
        "rank_histogram": {_rank_label(rank): count for rank, count in by_rank},
        "ranks": ranks,
        "alphas": alphas,
        "bundled_embeddings": {  # pivotal tuning: token -> embedding-file key -> [vectors, width]
            token: {key: list(tensor.shape) for key, tensor in vectors.items()} for token, vectors in bundled.items()
        },
        "dtypes": sorted({str(tensor.dtype).removeprefix("torch.") for tensor in tensors.values()}),
        "hashes": {
            "sshs_model_hash": metadata.get("sshs_model_hash"),
            "sshs_legacy_hash": metadata.get("sshs_legacy_hash"),
            "verified": verify_hashes(path) if has_hashes else None,
        },
        "metadata": metadata,
    }


def checkpoint_report(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, object]:
    family = detect_original_family(path, tensors.keys(), metadata)
    ema = [key for key in tensors if key.startswith(_EMA_PREFIX)]
    return {
        "file": str(path),
        "type": "checkpoint",
        "family": family.name,
        "key_count": len(tensors),
        "ema_keys": len(ema),
        "parameters": sum(tensor.numel() for key, tensor in tensors.items() if not key.startswith(_EMA_PREFIX)),
        "dtypes": dict(Counter(str(tensor.dtype).removeprefix("torch.") for tensor in tensors.values())),
        "metadata": metadata,
    }


_EMBEDDING_FAMILY = {768: "sd1", 1024: "sd2"}  # the width of emb_params: CLIP ViT-L or OpenCLIP ViT-H
_ENCODER_NAMES = {SINGLE_ENCODER_KEY: "text encoder", "clip_l": "CLIP-L (text encoder 1)",
                  "clip_g": "CLIP-G (text encoder 2)"}


def is_embedding(tensors: dict[str, torch.Tensor]) -> bool:
    return set(tensors) in ({SINGLE_ENCODER_KEY}, set(SDXL_ENCODER_KEYS))


def embedding_report(path: Path) -> dict[str, object]:
    embedding = read_embedding_file(path)
    metadata = embedding.metadata
    widths = {key: tensor.shape[1] for key, tensor in embedding.vectors.items()}
    recorded = next((family.name for family in FAMILIES.values()
                     if family.ss_base_model_version == metadata.get("ss_base_model_version")), None)
    by_width = "sdxl" if "clip_g" in widths else _EMBEDDING_FAMILY.get(widths[SINGLE_ENCODER_KEY], "unknown")
    has_hashes = "sshs_model_hash" in metadata
    return {
        "file": str(path),
        "type": "embedding",
        "family": recorded or by_width,
        "token": embedding.token(path),
        "vectors": embedding.num_vectors,
        "widths": widths,
        "encoders": [_ENCODER_NAMES[key] for key in embedding.vectors],
        "step": metadata.get("ss_steps") or metadata.get("step"),
        "dtypes": sorted({str(tensor.dtype).removeprefix("torch.") for tensor in embedding.vectors.values()}),
        "hashes_verified": verify_hashes(path) if has_hashes else None,
        "metadata": metadata,
    }


def folder_report(path: Path) -> dict[str, object]:
    family = detect_diffusers_family(path)
    parts = sorted(child.name for child in path.iterdir() if (child / "config.json").is_file())
    return {"file": str(path), "type": "diffusers", "family": family.name, "components": parts}


def is_lora_file(path: Path) -> bool:
    """Whether a ``.safetensors`` file holds adapter keys only, besides bundled embeddings (read from its header, no
    tensor loaded)."""
    with safe_open(str(path), framework="pt") as handle:
        keys = [key for key in handle.keys() if not is_bundled(key)]
    return bool(keys) and all(key.endswith(_LORA_KEY_ENDINGS) for key in keys)


def inspect_path(path: Path) -> dict[str, object]:
    """The report of any supported file or folder."""
    existing_path(path, "file")
    if path.is_dir():
        return folder_report(path)
    if path.suffix.lower() in (PT_SUFFIX, ".safetensors") and is_hypernetwork(path):
        return hypernetwork_report(path)
    if path.suffix.lower() == ".pt":
        try:
            return embedding_report(path)  # an A1111 embedding; anything else is read as a checkpoint below
        except EmbeddingFileError:
            pass
    tensors, metadata = read_state_dict(path)
    if is_embedding(tensors):
        return embedding_report(path)
    adapter, _ = split_bundled(tensors)
    if adapter and all(key.endswith(_LORA_KEY_ENDINGS) for key in adapter):
        return lora_report(path, tensors, metadata)
    if any(key.endswith(_LORA_KEY_ENDINGS) for key in tensors):
        raise ToolError(f"{path}: mixes LoRA keys with other tensors; not a kohya LoRA nor a plain checkpoint")
    return checkpoint_report(path, tensors, metadata)


def format_report(report: dict[str, object], list_modules: bool) -> str:
    lines = [f"{report['file']}: {report['type']}, family {report['family']}"]
    if report["type"] == "lora":
        hashes = report["hashes"]
        state = {True: "verified", False: "MISMATCH", None: "absent"}[hashes["verified"]]
        lines += [
            f"kind: {report['kind']} ({report['layout']} layout), {report['module_count']} modules "
            f"({report['unet_modules']} UNet, "
            f"{report['text_encoder_modules']} text encoder), {report['key_count']} keys, "
            + ", ".join(report["dtypes"]),
            f"algo: {report['algo']}"
            + ("" if report["algo"] != "lokr" else f", factor {_factor_label(report['factor'])}"),
            "ranks: " + ", ".join(f"{rank} x{count}" for rank, count in report["rank_histogram"].items()),
            f"hashes: {state} (model {hashes['sshs_model_hash']}, legacy {hashes['sshs_legacy_hash']})",
        ]
        lines += [
            f"bundled embedding: {token}, " + ", ".join(f"{key} {shape[0]} x {shape[1]}" for key, shape in shapes.items())
            for token, shapes in report["bundled_embeddings"].items()
        ]
        if list_modules:
            lines += [
                f"  {name}: rank {_rank_label(rank)}, alpha {report['alphas'][name]}"
                for name, rank in report["ranks"].items()
            ]
    elif report["type"] == "embedding":
        state = {True: "verified", False: "MISMATCH", None: "absent"}[report["hashes_verified"]]
        widths = ", ".join(f"{key} {width}" for key, width in report["widths"].items())
        lines += [
            f"token: {report['token']}, {report['vectors']} vector(s), step {report['step']}",
            f"encoders: {', '.join(report['encoders'])} (widths {widths}), {', '.join(report['dtypes'])}",
            f"hashes: {state}",
        ]
    elif report["type"] == "hypernetwork":
        lines += format_hypernetwork(report)
    elif report["type"] == "checkpoint":
        lines.append(
            f"{report['key_count']} keys, {report['parameters']:,} parameters, EMA keys {report['ema_keys']}, "
            f"dtypes {report['dtypes']}"
        )
    else:
        lines.append("components: " + ", ".join(report["components"]))
    for key, value in sorted(report.get("metadata", {}).items()):
        shown = value if len(value) <= 120 else value[:117] + "..."
        lines.append(f"  {key} = {shown}")
    return "\n".join(lines)


def _factor_label(factor: int | None) -> str:
    return {None: "not recorded", -1: "-1 (automatic)"}.get(factor, str(factor))


def run(args: argparse.Namespace) -> int:
    report = inspect_path(args.file)
    print(json.dumps(report, indent=2) if args.json else format_report(report, args.modules))
    if report.get("hashes_verified") is False or (report["type"] == "lora" and report["hashes"]["verified"] is False):
        raise ToolError(f"{args.file}: stored hashes do not match the tensors (the file was modified or is corrupt)")
    return 0
