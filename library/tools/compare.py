"""'compare': a labelled grid of LoRA files (e.g. a run's epochs) x strengths x prompts, at fixed seeds.

Rows are (LoRA file, prompt) pairs, columns are strengths. Each cell is rendered with the LoRA merged into the base
weights at that strength (the touched weights are restored between cells), with the prompt's own seed, so cells
differ only by file and strength. A pivotal-tuning file's embedding (bundled, or its ``_emb.safetensors`` beside it)
is put into the text encoders with it at every strength, so its token prompts as trained. Writes ``compare.png`` and every single image under ``singles/`` in ``--out``.
A training run renders the same grid at its end (``sample.compare_at_end``), with the files loaded into its live
adapters instead of merged (:mod:`library.sampling.compare_grid`).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from library.models.loader import BaseModel
from library.networks import merge_lora_into, read_lora_file, split_modules
from library.networks.pivotal_embeddings import embeddings_applied
from library.networks.targets import index_modules
from library.sampling.compare_grid import LoraApplier, render_grid
from library.sampling.prompts import SamplePrompt, load_prompts, parse_prompt_lines
from library.tools.common import ToolError, add_family_argument, existing_path, load_model
from library.training.run_files import EXTENSION, is_companion, training_order


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="image grid of LoRAs x strengths x prompts", description=__doc__)
    parser.add_argument("base", type=Path, metavar="BASE", help="the base model the LoRAs were trained on")
    parser.add_argument("loras", type=Path, nargs="+", metavar="LORA", help="LoRA files, or a run folder (all of its)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="default: 0 0.5 1")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt line (inline --n/--w/--h/--s/--l/--d)")
    parser.add_argument("--prompts", type=Path, help="a sample prompt file (text, .toml or .json)")
    parser.add_argument("--width", type=int, default=512, help="default image width (default: %(default)s)")
    parser.add_argument("--height", type=int, default=512, help="default image height (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="default sampling steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="default seed (default: %(default)s)")
    add_family_argument(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for compare.png and singles/")
    parser.set_defaults(run=run)


def collect_loras(inputs: Sequence[Path]) -> list[Path]:
    """The LoRA files named, with each folder expanded to its ``.safetensors`` files in training order (each run's
    files as its own ``compare_at_end`` grid orders them; the embeddings saved beside them left out)."""
    files: list[Path] = []
    for path in inputs:
        if existing_path(path, "LoRA file or run folder").is_dir():
            found = training_order(file for file in path.glob(f"*{EXTENSION}") if not is_companion(file))
            if not found:
                raise ToolError(f"{path}: no .safetensors files in this folder")
            files += found
        else:
            files.append(path)
    return files


def gather_prompts(args: argparse.Namespace) -> list[SamplePrompt]:
    defaults = SamplePrompt(prompt="", width=args.width, height=args.height, steps=args.steps, seed=args.seed)
    prompts = load_prompts(args.prompts, defaults) if args.prompts else []
    prompts += parse_prompt_lines("\n".join(args.prompt), defaults, "--prompt")
    if not prompts:
        raise ToolError("give at least one --prompt TEXT or --prompts FILE")
    return prompts


@contextlib.contextmanager
def weights_restored(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Put the modules' weights back as they were when the block ends."""
    saved = [module.weight.detach().clone() for module in modules]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, weight in zip(modules, saved):
                module.weight.copy_(weight)


def merged_into(model: BaseModel) -> LoraApplier:
    """Apply a LoRA by merging it into the model's weights, restored when the cell is done, with the embeddings
    that go with it (a pivotal-tuning file's token)."""
    index = index_modules(model.family, model.unet, model.text_encoders)

    @contextlib.contextmanager
    def apply(lora: Path, strength: float) -> Iterator[None]:
        tensors, _ = read_lora_file(lora)
        touched = [index[name][0] for name in split_modules(tensors, str(lora)) if name in index]
        embeddings = embeddings_applied(model.family, model.tokenizers, model.text_encoders, lora, tensors)
        with weights_restored(touched), embeddings:
            merge_lora_into(model.family, model.unet, model.text_encoders, tensors, strength, source=str(lora))
            yield

    return apply


def run(args: argparse.Namespace) -> int:
    loras = collect_loras(args.loras)
    prompts = gather_prompts(args)
    model = load_model(args.base, args.family)
    grid, singles = render_grid(model, loras, args.strengths, prompts, args.out, apply=merged_into(model))
    print(
        f"wrote {grid} ({len(loras)} LoRA(s) x {len(args.strengths)} strength(s) x {len(prompts)} prompt(s)) "
        f"and {len(singles)} single images"
    )
    return 0
