"""'extract': a LoRA from the difference of two checkpoints (fine-tuned minus base), by SVD per module.

The modules considered are the ones training would adapt (``--conv-rank`` adds the 3x3 convs, LoCon); modules whose
weights did not change (largest absolute difference below ``--min-diff``) are left out. Both models are streamed,
one module's weights at a time.

A difference of two models is full rank, so by default each module's SVD is randomized (``torch.svd_lowrank`` on
``rank + --oversample`` dimensions with ``--power-iterations``). The energy the result keeps is exact, so is its
relative error ``||delta - new||_F / ||delta||_F``; how much lower an exact truncation's relative error could be is
bounded from the energy the random subspace missed, and reported per module (the bound is loose when the spectrum
is flat beyond the rank: it assumes the worst). ``--exact`` computes full SVDs instead (slow on full-size models).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from library.networks import LoraOptions, lora_metadata
from library.networks.lora_file import SAVE_PRECISIONS, ModuleWeights, save_dtype
from library.networks.metadata import TrainingInfo
from library.networks.targets import Target, find_targets
from library.tools.common import ToolError, add_family_argument, check_output, derived_metadata, write_lora
from library.tools.lowrank import RankRule, Spectrum, dense_svd, randomized_svd, truncate
from library.tools.model_source import ModelSource, Part, open_model

SvdMethod = Callable[[torch.Tensor, int], Spectrum]
"""A module's (partial) SVD, given the rank that will be kept."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("extract", help="extract a LoRA from two checkpoints", description=__doc__)
    parser.add_argument("tuned", type=Path, metavar="TUNED", help="the fine-tuned model")
    parser.add_argument("base", type=Path, metavar="BASE", help="the model it was tuned from")
    parser.add_argument("--rank", type=int, required=True, help="rank of the Linear / 1x1 modules")
    parser.add_argument("--conv-rank", type=int, help="also extract 3x3 convs (LoCon) at this rank")
    parser.add_argument("--min-diff", type=float, default=1e-6, help="skip modules that changed less than this")
    parser.add_argument("--exact", action="store_true", help="full SVDs instead of randomized ones (slow)")
    parser.add_argument(
        "--oversample", type=int, default=10, help="randomized SVD: extra dimensions searched (default: %(default)s)"
    )
    parser.add_argument(
        "--power-iterations", type=int, default=2, help="randomized SVD: power iterations (default: %(default)s)"
    )
    add_family_argument(parser)
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the extracted .safetensors LoRA")
    parser.add_argument("--json", action="store_true", help="print the per-module report as JSON")
    parser.set_defaults(run=run)


def svd_method(exact: bool, oversample: int, iterations: int) -> SvdMethod:
    if exact:
        return lambda matrix, rank: dense_svd(matrix)
    if oversample < 0 or iterations < 0:
        raise ToolError("--oversample and --power-iterations must be >= 0")
    return lambda matrix, rank: randomized_svd(matrix, rank, oversample, iterations)


def _weights(model: ModelSource, part: Part, target: Target, role: str) -> torch.Tensor:
    try:
        return model.tensor(part, f"{target.path}.weight")
    except ValueError:
        raise ToolError(
            f"{target.name}: missing or of another shape in {role} {model.path}; the two models are not the same "
            "architecture"
        ) from None


@torch.no_grad()
def extract_modules(
    tuned: ModelSource, base: ModelSource, options: LoraOptions, min_diff: float, svd: SvdMethod
) -> tuple[dict[str, ModuleWeights], list[dict[str, object]]]:
    """One low-rank module per target whose weight differs between ``tuned`` and ``base``, and a report row each
    (module, rank, energy kept, relative error, bound on its excess over the exact truncation's)."""
    meta = base.meta_modules()
    encoders = [meta[spec.component] for spec in base.family.text_encoders]
    targets = find_targets(base.family, meta[base.family.denoiser], encoders, options)
    if not any(target.is_unet for target in targets):
        raise ToolError(
            f"{base.path}: no {base.family.denoiser} module of {base.family.title} is a LoRA target (the family "
            f"record's unet_target_classes {list(base.family.unet_target_classes)} match none); nothing to extract"
        )
    modules: dict[str, ModuleWeights] = {}
    report: list[dict[str, object]] = []
    for target in tqdm(targets, desc="extract", unit="module", leave=False):
        component = base.family.denoiser if target.is_unet else base.family.text_encoders[int(target.component)].component
        part = base.parts[component]
        difference = _weights(tuned, part, target, "TUNED").float() - _weights(base, part, target, "BASE").float()
        if difference.abs().max() < min_diff:
            continue
        shape = tuple(difference.shape)
        result = truncate(
            svd(difference.reshape(shape[0], -1), target.rank),
            RankRule(max_rank=target.rank),
            shape[1:],
            (shape[0], *([1] * (len(shape) - 2))),
            target.alpha / target.rank,
        )
        modules[target.name] = result.weights
        report.append({
            "module": target.name,
            "rank": result.weights.rank,
            "energy": result.retained_energy,
            "error": result.relative_error,
            "excess_bound": result.excess_error_bound,
        })
    return modules, report


def print_report(out: Path, report: list[dict[str, object]], args: argparse.Namespace) -> None:
    """One line per module and a closing line: how close to the difference, how close to the exact truncation."""
    if args.json:
        print(json.dumps({"out": str(out), "modules": report}, indent=2))
        return
    for row in report:
        bound = "" if args.exact else f" (exact truncation: at most {row['excess_bound']:.2e} lower)"
        print(f"{row['module']}: rank {row['rank']}, relative error {row['error']:.4f}{bound}")
    ranks = f"rank {args.rank}" + (f", conv rank {args.conv_rank}" if args.conv_rank else "")
    mean_error = sum(float(row["error"]) for row in report) / len(report)
    method = "exact SVD" if args.exact else (
        f"randomized SVD; each module within {max(float(row['excess_bound']) for row in report):.2e} of the exact "
        "truncation's error"
    )
    print(f"wrote {out}: {len(report)} modules ({ranks}), mean relative error {mean_error:.4f} ({method})")


def run(args: argparse.Namespace) -> int:
    if args.rank < 1 or (args.conv_rank is not None and args.conv_rank < 1):
        raise ToolError("--rank and --conv-rank must be >= 1")
    svd = svd_method(args.exact, args.oversample, args.power_iterations)
    out = check_output(args.out)
    options = LoraOptions(
        dim=args.rank,
        alpha=float(args.rank),
        conv_dim=args.conv_rank,
        conv_alpha=None if args.conv_rank is None else float(args.conv_rank),
    )
    with open_model(args.tuned, args.family, "model TUNED") as tuned:
        family = tuned.family.name if args.family == "auto" else args.family
        with open_model(args.base, family, "model BASE") as base:
            modules, report = extract_modules(tuned, base, options, args.min_diff, svd)
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
        "svd": "exact" if args.exact else {"oversample": args.oversample, "power_iterations": args.power_iterations},
    }
    metadata = derived_metadata(lora_metadata(base.family, options, info), recipe)
    write_lora(out, modules, metadata, save_dtype(args.save_precision), base.family)
    print_report(out, report, args)
    return 0
