"""'resize': lower a LoRA's rank by SVD, to a fixed rank or per module by a dynamic criterion.

Every module's update is refactored from its exact ``up @ down * alpha/rank``, by an SVD computed from the factors
(exact, and cheap: the update's rank is at most the module's rank); the alpha/rank ratio of the file is kept, so
strengths mean the same before and after. The report lists each module's rank change and the share of
its update's energy (squared Frobenius norm) that survived; resizing to the file's own rank is lossless. DoRA
magnitudes are kept as they are (they renormalise whatever update the factors hold); LoHa and LoKr files are
refused. Embeddings bundled in the file (pivotal tuning) are carried into the output unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm.auto import tqdm

from library.networks.lora_file import SAVE_PRECISIONS, ModuleWeights, save_dtype
from library.tools.common import (
    ToolError,
    check_output,
    derived_metadata,
    kept_embeddings,
    only_lora_modules,
    read_lora_modules,
    write_lora,
)
from library.tools.lowrank import DYNAMIC_METHODS, RankRule, factor_shapes, module_svd, one_thread, truncate


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("resize", help="reduce a LoRA's rank by SVD", description=__doc__)
    parser.add_argument("lora", type=Path, metavar="LORA")
    parser.add_argument("--rank", type=int, help="new rank (with --dynamic: the largest rank allowed)")
    parser.add_argument("--dynamic", choices=DYNAMIC_METHODS, help="choose each module's rank by this criterion")
    parser.add_argument(
        "--dynamic-param",
        type=float,
        help="sv_ratio: keep singular values >= largest/param (e.g. 8); sv_fro / sv_cumulative: the share of "
        "the Frobenius norm / of the singular value sum to keep (e.g. 0.9)",
    )
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the resized .safetensors LoRA")
    parser.add_argument("--json", action="store_true", help="print the per-module report as JSON")
    parser.set_defaults(run=run)


def rank_rule(rank: int | None, dynamic: str | None, parameter: float | None) -> RankRule:
    """Check the option combination and turn it into a rule."""
    if rank is None and dynamic is None:
        raise ToolError("give --rank R, --dynamic METHOD --dynamic-param P, or both")
    if rank is not None and rank < 1:
        raise ToolError(f"--rank must be >= 1, got {rank}")
    if dynamic is None:
        return RankRule(max_rank=rank)
    if parameter is None:
        raise ToolError(f"--dynamic {dynamic} needs --dynamic-param")
    if dynamic == "sv_ratio" and parameter < 1:
        raise ToolError(f"--dynamic-param for sv_ratio must be >= 1 (largest/smallest kept), got {parameter}")
    if dynamic != "sv_ratio" and not 0 < parameter <= 1:
        raise ToolError(f"--dynamic-param for {dynamic} must be in (0, 1], got {parameter}")
    return RankRule(max_rank=rank, method=dynamic, parameter=parameter)


def resize_modules(
    modules: dict[str, ModuleWeights], rule: RankRule
) -> tuple[dict[str, ModuleWeights], list[dict[str, object]]]:
    """The resized modules and one report row per module (name, old/new rank, retained energy)."""
    resized: dict[str, ModuleWeights] = {}
    report: list[dict[str, object]] = []
    with one_thread():
        for name, weights in tqdm(modules.items(), desc="resize", unit="module", leave=False):
            down_shape, up_shape = factor_shapes(weights)
            result = truncate(module_svd(weights), rule, down_shape, up_shape, weights.scale, weights.dora_scale)
            resized[name] = result.weights
            row = {"module": name, "rank": weights.rank, "new_rank": result.weights.rank}
            report.append({**row, "energy": result.retained_energy})
    return resized, report


def run(args: argparse.Namespace) -> int:
    rule = rank_rule(args.rank, args.dynamic, args.dynamic_param)
    out = check_output(args.out)
    modules, metadata, embeddings = read_lora_modules(args.lora)
    resized, report = resize_modules(only_lora_modules(modules, args.lora, "resize"), rule)
    recipe = {
        "tool": "resize",
        "source": args.lora.name,
        "rank": args.rank,
        "dynamic": args.dynamic,
        "dynamic_param": args.dynamic_param,
    }
    write_lora(out, resized, derived_metadata(metadata, recipe), save_dtype(args.save_precision),
               embeddings=embeddings)
    if args.json:
        print(json.dumps({"out": str(out), "modules": report, "bundled_embeddings": sorted(embeddings)}, indent=2))
    else:
        for row in report:
            print(f"{row['module']}: rank {row['rank']} -> {row['new_rank']}, energy kept {row['energy']:.2%}")
        mean = sum(row["energy"] for row in report) / max(len(report), 1)
        print(f"wrote {out}: {len(report)} modules, mean energy kept {mean:.2%}{kept_embeddings(embeddings)}")
    return 0
