"""'merge-models': merge checkpoints by weighted sum, add-difference, and per-block weights.

- weighted sum: ``A * (1 - alpha) + B * alpha``
- add-difference (with ``--c``): ``A + (B - C) * alpha``
- ``--block-weights``: one alpha per UNet block in the usual IN00..IN11, M00, OUT00..OUT11 order (SDXL: IN00..IN08,
  M00, OUT00..OUT08), comma-separated; ``--alpha`` then applies to everything outside those blocks (time
  embedding, final layers, text encoders, VAE).

Inputs are original-layout single files, .ckpt files or diffusers folders (in any mix); the output is one
original-layout single file, with modelspec metadata and the recipe. The models are streamed: one tensor of each
is read, merged and written at a time (a .ckpt, or a folder the loader has to convert, is read whole).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from library.models.single_file.rules import KeyRule
from library.networks.lora_file import SAVE_PRECISIONS, save_dtype
from library.tools.common import ToolError, check_output, checkpoint_metadata
from library.tools.model_source import ModelSource, Part, open_model
from library.tools.streamed_checkpoint import write_streamed_checkpoint

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


def merged_tensor(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None, weight: float) -> torch.Tensor:
    """One merged tensor in float32 (a non-float tensor is taken from ``a``)."""
    if not a.is_floating_point():
        return a
    if c is None:
        return a.float() * (1 - weight) + b.float() * weight
    return a.float() + (b.float() - c.float()) * weight


def merged_tensors(
    models: list[ModelSource], part: Part, rule: KeyRule, alpha: float, block_weights: Mapping[str, float]
) -> list[torch.Tensor]:
    """The merged diffusers tensors of one rule of A's ``part`` (``models`` = A, B and C if given)."""
    key = part.original_key(rule)
    inputs = []
    for model, role in zip(models, "ABC"):
        try:
            inputs.append(model.tensors(part, rule))
        except ValueError:
            raise ToolError(f"{key}: missing or a different shape in model {role}; the models do not match") from None
    weight = block_weights.get(block_label(key) or "", alpha)
    c = inputs[2] if len(inputs) == 3 else [None] * len(inputs[0])
    return [merged_tensor(a, b, other, weight) for a, b, other in zip(inputs[0], inputs[1], c)]


def run(args: argparse.Namespace) -> int:
    out = check_output(args.out)
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(open_model(args.a, what="model A"))
        models = [a, stack.enter_context(open_model(args.b, a.family.name, "model B"))]
        if args.c is not None:
            models.append(stack.enter_context(open_model(args.c, a.family.name, "model C")))
        labels = block_labels([part.original_key(rule) for part in a.parts.values() for rule in part.rules])
        blocks = parse_block_weights(args.block_weights, labels) if args.block_weights else {}
        recipe = {
            "tool": "merge-models",
            "a": args.a.name,
            "b": args.b.name,
            "c": args.c.name if args.c else None,
            "alpha": args.alpha,
            "block_weights": blocks or None,
        }
        tensors = write_streamed_checkpoint(
            out,
            a,
            lambda part, rule: merged_tensors(models, part, rule, args.alpha, blocks),
            save_dtype(args.save_precision),
            checkpoint_metadata(out.stem, recipe),
            "merge-models",
        )
    mode = "add-difference" if args.c is not None else "weighted sum"
    print(
        f"wrote {out}: {mode}, alpha {args.alpha:g}" + (f", {len(blocks)} block weights" if blocks else "")
        + f" ({tensors} tensors)"
    )
    return 0
