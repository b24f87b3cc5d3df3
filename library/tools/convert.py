"""'convert': between a .ckpt, an original-layout .safetensors and a diffusers folder; change precision, prune.

A ``.ckpt`` is read with ``torch.load(weights_only=True)``: a pickle that wants to run code is refused. The output is
a single ``.safetensors`` file when ``--out`` ends in ``.safetensors``, else a diffusers folder. Only the model's
weights are written: EMA copies, optimizer state and other extra keys are pruned.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from library.models.pipeline import assemble_pipeline
from library.networks.lora_file import SAVE_PRECISIONS, save_dtype
from library.sampling.samplers import build_scheduler
from library.tools.common import ToolError, add_family_argument, load_model, write_checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert checkpoints (.ckpt, single file, diffusers folder)", description=__doc__
    )
    parser.add_argument("source", type=Path, metavar="SOURCE", help=".ckpt, .safetensors or diffusers folder")
    parser.add_argument("--out", type=Path, required=True, help="FILE.safetensors or a diffusers folder")
    add_family_argument(parser)
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.set_defaults(run=run)


def write_diffusers_folder(model, out: Path, dtype: torch.dtype) -> None:
    """Save a diffusers folder next to ``out`` first and rename it into place, so no half folder is left."""
    if out.exists():
        raise ToolError(f"{out}: already exists; choose a new folder for the diffusers model")
    temporary = out.with_name(out.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    for module in (model.unet, model.vae, *model.text_encoders):
        if module.dtype != dtype:
            module.to(dtype)
    scheduler = build_scheduler("ddim", model.noise_scheduler.config)  # a sampling scheduler, as SD folders ship
    pipeline = assemble_pipeline(model.family, model.unet, model.vae, model.text_encoders, model.tokenizers, scheduler)
    try:
        pipeline.save_pretrained(temporary, safe_serialization=True)
        temporary.rename(out)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    model = load_model(args.source, args.family)
    dtype = save_dtype(args.save_precision)
    recipe = {"tool": "convert", "source": args.source.name, "precision": args.save_precision}
    if args.out.suffix.lower() == ".safetensors":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(args.out, model, recipe, dtype=dtype)
    elif args.out.suffix:
        raise ToolError(f"{args.out}: --out must be a .safetensors file or a folder name without an extension")
    else:
        write_diffusers_folder(model, args.out, dtype)
    print(f"wrote {args.out} ({model.family.name}, {args.save_precision}) from {args.source}")
    return 0
