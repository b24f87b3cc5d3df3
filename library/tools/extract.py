"""'extract': a LoRA from the difference of two checkpoints (fine-tuned minus base), by SVD per module.

The modules considered are the ones training would adapt (``--conv-rank`` adds the 3x3 convs, LoCon); modules whose
weights did not change (largest absolute difference below ``--min-diff``) are left out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from library.models.loader import BaseModel
from library.networks import LoraOptions, lora_metadata
from library.networks.lora_file import SAVE_PRECISIONS, ModuleWeights, save_dtype
from library.networks.metadata import TrainingInfo
from library.networks.targets import find_targets
from library.tools.common import ToolError, add_family_argument, check_output, derived_metadata, load_model, write_lora
from library.tools.lowrank import RankRule, factorise


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="extract a LoRA from two checkpoints", description=__doc__)
    parser.add_argument("tuned", type=Path, metavar="TUNED", help="the fine-tuned model")
    parser.add_argument("base", type=Path, metavar="BASE", help="the model it was tuned from")
    parser.add_argument("--rank", type=int, required=True, help="rank of the Linear / 1x1 modules")
    parser.add_argument("--conv-rank", type=int, help="also extract 3x3 convs (LoCon) at this rank")
    parser.add_argument("--min-diff", type=float, default=1e-6, help="skip modules that changed less than this")
    add_family_argument(parser)
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the extracted .safetensors LoRA")
    parser.set_defaults(run=run)


@torch.no_grad()
def extract_modules(
    tuned: BaseModel, base: BaseModel, options: LoraOptions, min_diff: float
) -> dict[str, ModuleWeights]:
    """One low-rank module per target whose weight differs between ``tuned`` and ``base``."""
    targets = find_targets(base.family, base.unet, base.text_encoders, options)
    components = {
        "unet": (tuned.unet, base.unet),
        **{index: pair for index, pair in enumerate(zip(tuned.text_encoders, base.text_encoders))},
    }
    modules: dict[str, ModuleWeights] = {}
    for target in tqdm(targets, desc="extract", unit="module", leave=False):
        tuned_root, base_root = components[target.component]
        tuned_weight = tuned_root.get_submodule(target.path).weight
        base_weight = base_root.get_submodule(target.path).weight
        if tuned_weight.shape != base_weight.shape:
            raise ToolError(
                f"{target.name}: shapes differ ({tuple(tuned_weight.shape)} vs {tuple(base_weight.shape)})"
                "; the two models are not the same architecture"
            )
        difference = tuned_weight.float() - base_weight.float()
        if difference.abs().max() < min_diff:
            continue
        shape = tuple(difference.shape)
        result = factorise(
            difference.reshape(shape[0], -1),
            RankRule(max_rank=target.rank),
            shape[1:],
            (shape[0], *([1] * (len(shape) - 2))),
            target.alpha / target.rank,
        )
        modules[target.name] = result.weights
    return modules


def run(args: argparse.Namespace) -> int:
    if args.rank < 1 or (args.conv_rank is not None and args.conv_rank < 1):
        raise ToolError("--rank and --conv-rank must be >= 1")
    out = check_output(args.out)
    tuned = load_model(args.tuned, args.family)
    base = load_model(args.base, tuned.family.name if args.family == "auto" else args.family)
    options = LoraOptions(
        dim=args.rank,
        alpha=float(args.rank),
        conv_dim=args.conv_rank,
        conv_alpha=None if args.conv_rank is None else float(args.conv_rank),
    )
    modules = extract_modules(tuned, base, options, args.min_diff)
    if not modules:
        raise ToolError(f"{args.tuned} and {args.base} do not differ in any adaptable module; nothing to extract")
    resolution = base.family.default_resolution
    info = TrainingInfo(
        output_name=out.stem,
        resolution=(resolution, resolution),
        learning_rate=0.0,
        training_started_at=time.time(),
        sd_model_name=args.base.name,
        training_comment=f"extracted: {args.tuned.name} minus {args.base.name}",
    )
    recipe = {
        "tool": "extract",
        "tuned": args.tuned.name,
        "base": args.base.name,
        "rank": args.rank,
        "conv_rank": args.conv_rank,
    }
    metadata = derived_metadata(lora_metadata(base.family, options, info), recipe)
    write_lora(out, modules, metadata, save_dtype(args.save_precision))
    print(
        f"wrote {out}: {len(modules)} modules (rank {args.rank}"
        + (f", conv rank {args.conv_rank})" if args.conv_rank else ")")
    )
    return 0
