"""'merge-models': merge checkpoints by weighted sum, add-difference, and per-block weights.

- weighted sum: ``A * (1 - alpha) + B * alpha``
- add-difference (with ``--c``): ``A + (B - C) * alpha``
- ``--block-weights``: one alpha per UNet block in the usual IN00..IN11, M00, OUT00..OUT11 order (SDXL: IN00..IN08,
  M00, OUT00..OUT08), comma-separated; ``--alpha`` then applies to everything outside those blocks (time
  embedding, final layers, text encoders, VAE).

Inputs are original-layout single files, .ckpt files or diffusers folders (in any mix); the output is one
original-layout single file, with modelspec metadata and the recipe.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from library.models.checkpoint_io import read_state_dict
from library.models.detect import detect_original_family
from library.models.pipeline import component_configs, component_modules
from library.models.single_file import diffusers_to_original, original_to_diffusers, save_original_checkpoint
from library.models.single_file.checkpoint import default_metadata
from library.networks.lora_file import SAVE_PRECISIONS, save_dtype
from library.tools.common import ToolError, check_output, checkpoint_metadata, existing_path, load_model

_UNET = "model.diffusion_model."
_BLOCK = re.compile(r"^model\.diffusion_model\.(input_blocks|middle_block|output_blocks)\.(\d+)?")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge-models",
        help="merge checkpoints (weighted sum, add-difference, block weights)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", type=Path, metavar="A", help="a single file or diffusers folder (as are B and C)")
    parser.add_argument("b", type=Path, metavar="B")
    parser.add_argument("--c", type=Path, metavar="C", help="add-difference: A + (B - C) * alpha")
    parser.add_argument("--alpha", type=float, default=0.5, help="merge weight (default: %(default)s)")
    parser.add_argument("--block-weights", help="comma-separated alphas for IN00.., M00, OUT00.. blocks")
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the merged .safetensors checkpoint")
    parser.set_defaults(run=run)


def block_label(key: str) -> str | None:
    """``IN04``, ``M00`` or ``OUT11`` for a UNet block key; None for everything else."""
    match = _BLOCK.match(key)
    if match is None:
        return None
    kind, index = match.groups()
    if kind == "middle_block":
        return "M00"
    return f"{'IN' if kind == 'input_blocks' else 'OUT'}{int(index):02d}"


def block_labels(keys: list[str]) -> list[str]:
    """The block labels of a state dict, in IN.., M00, OUT.. order."""
    found = {label for label in map(block_label, keys) if label is not None}
    order = {"IN": 0, "M": 1, "OUT": 2}
    return sorted(found, key=lambda label: (order[label.rstrip("0123456789")], int(label.lstrip("INMOUT"))))


def parse_block_weights(text: str, labels: list[str]) -> dict[str, float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ToolError(f"--block-weights: {text!r} is not a comma-separated list of numbers") from None
    if len(values) != len(labels):
        raise ToolError(
            f"--block-weights: got {len(values)} values, this model has {len(labels)} blocks "
            f"({labels[0]}..{labels[-1]}); give one per block"
        )
    return dict(zip(labels, values))


def merge_state_dicts(
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    c: Mapping[str, torch.Tensor] | None,
    alpha: float,
    block_weights: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """The merged tensors of every key of ``a`` (non-float tensors are taken from ``a``)."""
    merged: dict[str, torch.Tensor] = {}
    for key, tensor_a in tqdm(a.items(), desc="merge-models", unit="tensor", leave=False):
        if not tensor_a.is_floating_point():
            merged[key] = tensor_a
            continue
        for name, other in (("B", b), ("C", c)):
            if other is not None and (key not in other or other[key].shape != tensor_a.shape):
                raise ToolError(f"{key}: missing or a different shape in model {name}; the models do not match")
        weight = block_weights.get(block_label(key) or "", alpha)
        if c is None:
            merged[key] = tensor_a.float() * (1 - weight) + b[key].float() * weight
        else:
            merged[key] = tensor_a.float() + (b[key].float() - c[key].float()) * weight
    return merged


def _read(path: Path, role: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A model's tensors in the original layout (a diffusers folder is converted in memory) and its metadata."""
    if not existing_path(path, f"model {role}").is_dir():
        return read_state_dict(path)
    model = load_model(path)
    modules = component_modules(model.family, model.unet, model.vae, model.text_encoders)
    state_dicts = {name: module.state_dict() for name, module in modules.items()}
    tensors = diffusers_to_original(model.family.name, state_dicts, component_configs(modules))
    return tensors, default_metadata(model.family.name, path.name)  # modelspec tells SD2 from SD2-v


def run(args: argparse.Namespace) -> int:
    out = check_output(args.out)
    (a, a_metadata), (b, _) = _read(args.a, "A"), _read(args.b, "B")
    c = None if args.c is None else _read(args.c, "C")[0]
    family = detect_original_family(args.a, a.keys(), a_metadata)
    labels = block_labels(list(a))
    blocks = parse_block_weights(args.block_weights, labels) if args.block_weights else {}
    merged = merge_state_dicts(a, b, c, args.alpha, blocks)
    configs, state_dicts = original_to_diffusers(family.name, merged)
    recipe = {
        "tool": "merge-models",
        "a": args.a.name,
        "b": args.b.name,
        "c": args.c.name if args.c else None,
        "alpha": args.alpha,
        "block_weights": blocks or None,
    }
    metadata = checkpoint_metadata(out.stem, recipe)
    save_original_checkpoint(out, family.name, state_dicts, configs, metadata, save_dtype(args.save_precision))
    mode = "add-difference" if c is not None else "weighted sum"
    print(f"wrote {out}: {mode}, alpha {args.alpha:g}" + (f", {len(blocks)} block weights" if blocks else ""))
    return 0
