"""'merge-into': bake LoRAs into a base model and save one original-layout single-file checkpoint.

Each LoRA adds ``ratio * alpha/rank * up @ down`` to its module's weight (DoRA modules are renormalised per output
row to their stored magnitude), the same arithmetic as applying it at run time with that strength. LyCORIS LoHa
modules (``hada_*`` keys) add their Hadamard-product update and LoKr modules (``lokr_*`` keys) their Kronecker-product
update the same way. The output carries modelspec metadata and the recipe. FLUX.1 LoRAs are read in either
layout (kohya/BFL with fused q, k, v, or diffusers), split back onto diffusers' modules exactly.

A pivotal-tuning LoRA's embedding cannot go into a checkpoint (it has no row for a new token): the tool says
which file holds it, to load beside the merged checkpoint.

The base is streamed: each weight is read, has its LoRA updates added (in the order the files are given) and is
written before the next is read, so memory holds the LoRAs and a few tensors, not the model.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from library.models.families import ModelFamily, TextEncoderSpec
from library.models.single_file.rules import KeyRule
from library.networks.lora_layouts import adapter_tensors
from library.networks.lora_file import SAVE_PRECISIONS, save_dtype
from library.networks.merge import locate_modules, merged_weight
from library.networks.pivotal_embeddings import embedding_places
from library.tools.common import (
    AdapterModule,
    ToolError,
    add_family_argument,
    check_output,
    checkpoint_metadata,
    lora_family,
    parse_ratios,
    read_adapter_file,
    split_adapter_modules,
)
from library.tools.model_source import ModelSource, Part, open_model
from library.tools.streamed_checkpoint import write_streamed_checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge-into", help="bake LoRAs into a base checkpoint", description=__doc__)
    parser.add_argument("base", type=Path, metavar="BASE", help="base model: .safetensors, .ckpt or diffusers folder")
    parser.add_argument("loras", type=Path, nargs="+", metavar="LORA")
    parser.add_argument("--ratios", type=float, nargs="+", help="one strength per LoRA (default 1.0 each)")
    add_family_argument(parser)
    parser.add_argument("--save-precision", default="fp16", choices=SAVE_PRECISIONS, help="default: %(default)s")
    parser.add_argument("--out", type=Path, required=True, help="the merged .safetensors checkpoint")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Update:
    """One adapter module's update of one weight, at a strength."""

    weights: AdapterModule
    multiplier: float

    def apply(self, weight: torch.Tensor) -> torch.Tensor:
        update = self.weights.delta(weight.shape) * (self.weights.scale * self.multiplier)
        return merged_weight(weight, update, self.weights.dora_scale)


def same_architecture(first: ModelFamily, second: ModelFamily) -> bool:
    """Whether a LoRA of one family fits the other's modules: the same denoiser and text encoders (a T5 caption
    length, FLUX.1 dev's 512 or schnell's 256, changes no module)."""
    def encoders(family: ModelFamily) -> list[TextEncoderSpec]:
        return [dataclasses.replace(spec, max_length=0) for spec in family.text_encoders]

    return first.denoiser_class == second.denoiser_class and encoders(first) == encoders(second)


Plan = dict[tuple[str, str], list[Update]]
"""(component, diffusers key) -> the updates of that weight, in the order the files were given."""


def plan_updates(base: ModelSource, loras: list[tuple[Path, float]]) -> tuple[Plan, int]:
    """Where every adapter module of every file goes in ``base`` (checked: each fits), and how many modules."""
    modules = base.meta_modules()
    unet = modules[base.family.denoiser]
    encoders = [modules[spec.component] for spec in base.family.text_encoders]
    component_of = {id(module): name for name, root in modules.items() for module in root.modules()}
    plan: Plan = defaultdict(list)
    count = 0
    for path, ratio in loras:
        tensors, metadata = read_adapter_file(path)
        made_for = lora_family(list(tensors), metadata)
        declared = "ss_base_model_version" in metadata
        if declared and made_for is not None and not same_architecture(made_for, base.family):
            raise ToolError(
                f"{path}: a {made_for.name} LoRA cannot merge into the {base.family.name} model {base.path}"
            )
        found = split_adapter_modules(adapter_tensors(base.family, tensors, str(path), metadata), str(path))
        located = locate_modules(base.family, unet, encoders, found, str(path))
        for name, (module, module_path) in located.items():
            plan[(component_of[id(module)], f"{module_path}.weight")].append(Update(found[name], ratio))
        count += len(located)
    return plan, count


def merged_tensors(base: ModelSource, plan: Plan, part: Part, rule: KeyRule) -> list[torch.Tensor]:
    """A rule's base tensors with their updates added (float32 where updated, as stored elsewhere)."""
    tensors = base.tensors(part, rule)
    for position, key in enumerate(rule.diffusers):
        for update in plan.get((part.name, key), ()):
            tensors[position] = update.apply(tensors[position])
    return tensors


def run(args: argparse.Namespace) -> int:
    ratios = parse_ratios(args.ratios, len(args.loras), "LoRAs")
    out = check_output(args.out)
    recipe = {
        "tool": "merge-into",
        "base": args.base.name,
        "loras": [{"file": lora.name, "ratio": ratio} for lora, ratio in zip(args.loras, ratios)],
    }
    with open_model(args.base, args.family) as base:
        plan, modules = plan_updates(base, list(zip(args.loras, ratios)))
        tensors = write_streamed_checkpoint(
            out,
            base,
            lambda part, rule: merged_tensors(base, plan, part, rule),
            save_dtype(args.save_precision),
            checkpoint_metadata(out.stem, recipe),
            "merge-into",
        )
    merged = ", ".join(f"{lora.name} x{ratio:g}" for lora, ratio in zip(args.loras, ratios))
    print(f"wrote {out}: {args.base.name} + {merged} ({modules} modules updated, {tensors} tensors)")
    places = {token: place for lora in args.loras for token, place in embedding_places(lora).items()}
    if places:
        where = ", ".join(f"{token!r} in {place}" for token, place in places.items())
        print(f"not in the merged checkpoint, which cannot hold a new token: the embedding(s) trained with the LoRA(s), "
              f"{where}; load it beside the checkpoint to prompt its token")
    return 0
