"""'merge-into': bake LoRAs into a base model and save one original-layout single-file checkpoint.

Each LoRA adds ``ratio * alpha/rank * up @ down`` to its module's weight (DoRA modules are renormalised per output
row to their stored magnitude), the same arithmetic as applying it at run time with that strength. LyCORIS LoHa
modules (``hada_*`` keys) add their Hadamard-product update the same way. The output carries modelspec metadata and
the recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from library.networks import merge_lora_into
from library.networks.lora_file import SAVE_PRECISIONS, save_dtype
from library.tools.common import (
    ToolError,
    add_family_argument,
    check_output,
    load_model,
    lora_family,
    parse_ratios,
    read_adapter_file,
    write_checkpoint,
)
from library.tools.loha import merge_hada_into, split_hada


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge-into", help="bake LoRAs into a base checkpoint", description=__doc__)
    parser.add_argument("base", type=Path, metavar="BASE", help="base model: .safetensors, .ckpt or diffusers folder")
    parser.add_argument("loras", type=Path, nargs="+", metavar="LORA")
    parser.add_argument("--ratios", type=float, nargs="+", help="one strength per LoRA (default 1.0 each)")
    add_family_argument(parser)
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the merged .safetensors checkpoint")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    ratios = parse_ratios(args.ratios, len(args.loras), "LoRAs")
    out = check_output(args.out)
    model = load_model(args.base, args.family)
    for lora, ratio in tqdm(list(zip(args.loras, ratios)), desc="merge-into", unit="LoRA"):
        tensors, metadata = read_adapter_file(lora)
        made_for = lora_family([key.split(".")[0] for key in tensors], metadata)
        declared = "ss_base_model_version" in metadata
        if declared and made_for is not None and made_for.text_encoders != model.family.text_encoders:
            raise ToolError(
                f"{lora}: a {made_for.name} LoRA cannot merge into the {model.family.name} model {args.base}"
            )
        low_rank, hada = split_hada(tensors, str(lora))
        if low_rank:
            merge_lora_into(model.family, model.unet, model.text_encoders, low_rank, ratio, source=str(lora))
        merge_hada_into(model.family, model.unet, model.text_encoders, hada, ratio, str(lora))
    recipe = {
        "tool": "merge-into",
        "base": args.base.name,
        "loras": [{"file": lora.name, "ratio": ratio} for lora, ratio in zip(args.loras, ratios)],
    }
    write_checkpoint(out, model, recipe, dtype=save_dtype(args.save_precision))
    print(f"wrote {out}: {args.base.name} + " + ", ".join(f"{lora.name} x{r:g}" for lora, r in zip(args.loras, ratios)))
    return 0
