"""'merge-loras': combine LoRAs into one file.

Modes:
- ``concat`` (exact): the ranks are stacked, so the result's update is exactly the ratio-weighted sum of the
  inputs' updates; its rank per module is the sum of theirs.
- ``svd``: the exact weighted sum of updates, refactored by SVD to ``--rank`` (``--conv-rank`` for 3x3 convs),
  reporting the energy kept. The sum has rank at most the sum of the inputs' ranks, so its SVD is computed from
  the stacked factors of ``concat`` (exact, without forming the full matrix).
- ``sum``: adds the factors themselves at equal rank: up = sum(ratio * alpha/rank * up), down = mean(down). Exact
  only when the inputs share their down matrices (e.g. trained from one initialisation with down frozen);
  otherwise an approximation that keeps the rank small, as sd-scripts' same-rank merge does.

DoRA modules (their magnitudes do not add) and LoHa and LoKr modules (no low-rank factors) are refused: merge such
files into a model with ``merge-into``.

Embeddings bundled in the inputs (pivotal tuning) are carried into the output as they are, whatever the ratios: an
embedding has no strength to weigh. A token bundled by several inputs must hold the same vectors in each; two
different embeddings of one token cannot share a file, and are refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from library.networks.lora_file import SAVE_PRECISIONS, ModuleWeights, save_dtype
from library.tools.common import (
    ToolError,
    check_output,
    derived_metadata,
    is_conv3,
    kept_embeddings,
    only_lora_modules,
    parse_ratios,
    read_lora_modules,
    write_lora,
)
from library.tools.lowrank import RankRule, factor_shapes, module_svd, one_thread, truncate

MODES = ("concat", "svd", "sum")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge-loras",
        help="combine LoRAs into one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("loras", type=Path, nargs="+", metavar="LORA")
    parser.add_argument("--ratios", type=float, nargs="+", help="one weight per LoRA (default 1.0 each)")
    parser.add_argument("--mode", choices=MODES, default="concat", help="default: %(default)s")
    parser.add_argument("--rank", type=int, help="svd mode: target rank")
    parser.add_argument("--conv-rank", type=int, help="svd mode: target rank of 3x3 conv modules (default --rank)")
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the merged .safetensors LoRA")
    parser.set_defaults(run=run)


def _check_alike(name: str, parts: list[tuple[ModuleWeights, float]], sources: list[str]) -> None:
    shapes = {(tuple(w.down.shape[1:]), w.up.shape[0]) for w, _ in parts}
    if len(shapes) > 1:
        raise ToolError(f"{name}: the LoRAs disagree on this module's shape; are they for different models?")
    dora = next((source for (w, _), source in zip(parts, sources) if w.dora_scale is not None), None)
    if dora is not None:
        raise ToolError(
            f"{dora}: module {name} is DoRA (dora_scale), whose magnitudes do not add up across files; "
            "merge the LoRAs into a model with merge-into instead"
        )


def concat_module(parts: list[tuple[ModuleWeights, float]]) -> ModuleWeights:
    """Stacked ranks; each input's scale and ratio folded into its up rows, alpha = total rank (scale 1)."""
    downs = [weights.down.float() for weights, _ in parts]
    ups = [weights.up.float() * (weights.scale * ratio) for weights, ratio in parts]
    rank = sum(down.shape[0] for down in downs)
    return ModuleWeights(torch.cat(downs, 0), torch.cat(ups, 1), float(rank), None)


def sum_module(name: str, parts: list[tuple[ModuleWeights, float]]) -> ModuleWeights:
    ranks = {weights.rank for weights, _ in parts}
    if len(ranks) > 1:
        raise ToolError(f"{name}: ranks differ ({sorted(ranks)}); sum mode needs equal ranks, use --mode concat or svd")
    down = torch.stack([weights.down.float() for weights, _ in parts]).mean(0)
    up = sum(weights.up.float() * (weights.scale * ratio) for weights, ratio in parts)
    return ModuleWeights(down, up, float(down.shape[0]), None)


def merge_modules(
    loras: list[dict[str, ModuleWeights]],
    ratios: list[float],
    mode: str,
    rank: int | None,
    conv_rank: int | None,
    sources: list[str] | None = None,
) -> tuple[dict[str, ModuleWeights], dict[str, float]]:
    """The merged modules (union of all inputs' modules) and, in svd mode, the energy kept per module.

    ``sources`` names the inputs in error messages (default: their position).
    """
    sources = sources or [f"LoRA {index + 1}" for index in range(len(loras))]
    names = list(dict.fromkeys(name for lora in loras for name in lora))
    merged: dict[str, ModuleWeights] = {}
    energy: dict[str, float] = {}
    with one_thread():
        for name in tqdm(names, desc="merge-loras", unit="module", leave=False):
            present = [index for index, lora in enumerate(loras) if name in lora]
            parts = [(loras[index][name], ratios[index]) for index in present]
            _check_alike(name, parts, [sources[index] for index in present])
            if mode == "concat":
                merged[name] = concat_module(parts)
            elif mode == "sum":
                merged[name] = sum_module(name, parts)
            else:
                target = conv_rank if conv_rank is not None and is_conv3(parts[0][0]) else rank
                down_shape, up_shape = factor_shapes(parts[0][0])
                result = truncate(module_svd(concat_module(parts)), RankRule(max_rank=target), down_shape, up_shape)
                merged[name], energy[name] = result.weights, result.retained_energy
    return merged, energy


Embeddings = dict[str, dict[str, torch.Tensor]]  # token -> embedding-file tensors


def merge_embeddings(bundles: list[Embeddings], sources: list[str]) -> Embeddings:
    """Every input's bundled embeddings, each token once; a token two inputs bundle with different vectors is
    refused, naming it and both files."""
    merged: Embeddings = {}
    origin: dict[str, str] = {}
    for bundled, source in zip(bundles, sources):
        for token, vectors in bundled.items():
            if token not in merged:
                merged[token], origin[token] = vectors, source
            elif not _same_vectors(merged[token], vectors):
                raise ToolError(
                    f"bundled embedding {token!r}: {origin[token]} and {source} hold different vectors for it, and "
                    "a LoRA file holds one embedding per token; merge LoRAs whose embeddings of it agree"
                )
    return merged


def _same_vectors(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(
        first[key].dtype == second[key].dtype and torch.equal(first[key], second[key]) for key in first
    )


def run(args: argparse.Namespace) -> int:
    ratios = parse_ratios(args.ratios, len(args.loras), "LoRAs")
    if args.mode == "svd" and (args.rank is None or args.rank < 1):
        raise ToolError("--mode svd needs --rank R (R >= 1)")
    out = check_output(args.out)
    inputs = [read_lora_modules(path) for path in args.loras]
    loras = [only_lora_modules(modules, path, "combine") for (modules, _, _), path in zip(inputs, args.loras)]
    sources = [str(path) for path in args.loras]
    embeddings = merge_embeddings([bundled for _, _, bundled in inputs], sources)
    merged, energy = merge_modules(loras, ratios, args.mode, args.rank, args.conv_rank, sources)
    recipe = {
        "tool": "merge-loras",
        "mode": args.mode,
        "rank": args.rank,
        "loras": [{"file": path.name, "ratio": ratio} for path, ratio in zip(args.loras, ratios)],
    }
    metadata = derived_metadata(inputs[0][1], recipe)
    write_lora(out, merged, metadata, save_dtype(args.save_precision), embeddings=embeddings)
    summary = f"wrote {out}: {len(merged)} modules ({args.mode})"
    if energy:
        summary += f", mean energy kept {sum(energy.values()) / len(energy):.2%}"
    print(summary + kept_embeddings(embeddings))
    return 0
