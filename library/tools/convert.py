"""'convert': between a .ckpt, an original-layout .safetensors and a diffusers folder; change precision, prune.

A ``.ckpt`` is read with ``torch.load(weights_only=True)``: a pickle that wants to run code is refused. The output is
a single ``.safetensors`` file when ``--out`` ends in ``.safetensors``, else a diffusers folder. Only the model's
weights are written: EMA copies, optimizer state and other extra keys are pruned.

SOURCE may also be a DreamBooth run's ``state`` folder: ``--weights ema`` exports the EMA UNet it holds (what the
run's checkpoints contain when EMA was on), ``--weights raw`` the trained weights without averaging; the rest of
the model comes from ``--base`` (default: the run's final checkpoint beside the state folder).

SOURCE may also be a LoRA file: ``--layout`` rewrites it in the other file layout, ``kohya`` (FLUX.1: BFL names,
q, k and v fused) or ``diffusers`` (peft's ``lora_A``/``lora_B`` under ``transformer.`` / ``text_encoder.``), as
``network.save_format`` names them; the updates stay exactly the same. A pivotal-tuning LoRA's embeddings (bundled,
or in the ``<name>_emb.safetensors`` beside it) stay with it: bundled in a kohya file; beside a diffusers-layout file,
which has no place for them, as ``<out>_emb.safetensors`` (the textual-inversion file ``load_textual_inversion`` reads).

SOURCE may also be an A1111 hypernetwork ``.pt`` (read with ``weights_only``): it becomes the hypernetwork's
``.safetensors`` form (``<width>.<k|v>.<layer key>`` tensors, A1111's other entries as ``hypernetwork.*`` metadata),
which Furnace's loader and ``inspect`` read; the tensors keep their precision unless ``--save-precision`` says.

SOURCE may also be an A1111 textual-inversion ``.pt`` embedding (``string_to_param``, read with ``weights_only``): it
becomes the ``emb_params`` ``.safetensors`` file A1111, ComfyUI and diffusers read, its name and step kept as
``ss_token_string`` and ``ss_steps``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from library.atomic_files import atomic_folder
from library.models.loader import BaseModel
from library.models.pipeline import assemble_pipeline, pipeline_scheduler
from library.networks.bundled_embeddings import bundle_tensors, split_bundled
from library.networks.embedding_file import TOKEN_KEY, EmbeddingFileError, read_embedding_file, write_embedding_file
from library.networks.hypernetwork_file import (
    INFO_ENTRIES,
    PT_SUFFIX,
    a1111_dict,
    hypernetwork_of,
    is_hypernetwork,
    read_hypernetwork,
    write_safetensors,
)
from library.networks.lora_file import SAVE_PRECISIONS, save_dtype, write_lora_file
from library.networks.lora_layouts import SAVE_FORMATS, adapter_tensors, file_tensors, reference_paths
from library.networks.pivotal_embeddings import Embeddings, embedding_companion, lora_embeddings
from library.tools.common import (
    TOOL_KEY,
    ToolError,
    add_family_argument,
    check_output,
    derived_metadata,
    kept_embeddings,
    load_model,
    lora_family,
    read_adapter_file,
    write_checkpoint,
)
from library.tools.inspection import is_lora_file
from library.tools.run_state import WEIGHT_CHOICES, default_weights, is_state_folder, load_state_weights, run_checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert checkpoints (.ckpt, single file, diffusers folder), .pt embeddings and hypernetworks", description=__doc__
    )
    parser.add_argument(
        "source", type=Path, metavar="SOURCE", help=".ckpt, .safetensors, diffusers folder, a run's state folder, an A1111 .pt embedding or hypernetwork"
    )
    parser.add_argument("--out", type=Path, required=True, help="FILE.safetensors or a diffusers folder")
    parser.add_argument(
        "--weights", choices=WEIGHT_CHOICES, help="state folder: the EMA or the raw UNet (default: ema if saved)"
    )
    parser.add_argument("--base", type=Path, help="state folder: the model the rest comes from (default: the run's)")
    add_family_argument(parser)
    parser.add_argument(
        "--save-precision", choices=SAVE_PRECISIONS, help="default: fp16 (a LoRA keeps its own precision)"
    )
    parser.add_argument("--layout", choices=SAVE_FORMATS, help="LoRA SOURCE: the file layout to write")
    parser.set_defaults(run=run)


def write_diffusers_folder(model, out: Path, dtype: torch.dtype) -> None:
    """Save a diffusers folder atomically, so no half folder is left."""
    if out.exists():
        raise ToolError(f"{out}: already exists; choose a new folder for the diffusers model")
    for module in (model.unet, model.vae, *model.text_encoders):
        if module.dtype != dtype:
            module.to(dtype)
    pipeline = assemble_pipeline(model.family, model.unet, model.vae, model.text_encoders, model.tokenizers,
                                 pipeline_scheduler(model.family))
    with atomic_folder(out) as staging:
        pipeline.save_pretrained(staging, safe_serialization=True)


def load_source(args: argparse.Namespace) -> tuple[BaseModel, dict[str, object]]:
    """The model to write and the recipe entries saying where it came from."""
    if not is_state_folder(args.source):
        if args.weights or args.base:
            raise ToolError("--weights and --base apply to a run's state folder only")
        return load_model(args.source, args.family), {"source": args.source.name}
    base = args.base or run_checkpoint(args.source)
    weights = args.weights or default_weights(args.source)
    model = load_model(base, args.family)
    load_state_weights(model, args.source, weights)
    source = f"{args.source.parent.name}/{args.source.name}"
    return model, {"source": source, "weights": weights, "base": base.name}


def convert_embedding(args: argparse.Namespace) -> bool:
    """Write an A1111 ``.pt`` embedding SOURCE as ``.safetensors``; False when SOURCE is not one."""
    if args.source.suffix.lower() != ".pt" or not args.source.is_file():
        return False
    try:
        embedding = read_embedding_file(args.source)
    except EmbeddingFileError:
        return False  # a .pt checkpoint, converted below
    if args.out.suffix.lower() != ".safetensors":
        raise ToolError(f"{args.out}: an embedding converts to a .safetensors file")
    names = {"name": TOKEN_KEY, "step": "ss_steps"}
    metadata = {names[key]: value for key, value in embedding.metadata.items() if key in names}
    dtype = save_dtype(args.save_precision or "fp16")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_embedding_file(args.out, {key: rows.to(dtype) for key, rows in embedding.vectors.items()}, metadata)
    return True


def convert_hypernetwork(args: argparse.Namespace) -> bool:
    """Write an A1111 ``.pt`` hypernetwork SOURCE (read with ``weights_only``) as its ``.safetensors`` form; False
    when SOURCE is not one."""
    if args.source.suffix.lower() != PT_SUFFIX or not args.source.is_file() or not is_hypernetwork(args.source):
        return False
    if args.out.suffix.lower() != ".safetensors":
        raise ToolError(f"{args.out}: a hypernetwork converts to a .safetensors file")
    read = read_hypernetwork(args.source)
    first = next(tensor for pair in read.pairs.values() for state in pair for tensor in state.values())
    dtype = save_dtype(args.save_precision) if args.save_precision else first.dtype
    info = {key: read.info[key] for key in INFO_ENTRIES if key in read.info}
    saved = a1111_dict(hypernetwork_of(args.source, read), info, dtype)
    recipe = {"tool": "convert", "source": args.source.name}
    write_safetensors(check_output(args.out), saved, {TOOL_KEY: json.dumps(recipe)})
    print(f"wrote {args.out} (hypernetwork, widths {', '.join(map(str, sorted(read.pairs)))}) from {args.source}")
    return True


def convert_lora(args: argparse.Namespace) -> bool:
    """Write a LoRA SOURCE in ``--layout``; False when SOURCE is no LoRA file (and no layout was asked for)."""
    is_lora = args.source.suffix.lower() == ".safetensors" and args.source.is_file() and is_lora_file(args.source)
    if not is_lora:
        if args.layout:
            raise ToolError(f"{args.source}: --layout applies to LoRA files; this is not one")
        return False
    if not args.layout:
        raise ToolError(f"{args.source} is a LoRA: give --layout {' or '.join(SAVE_FORMATS)} to rewrite it")
    tensors, metadata = read_adapter_file(args.source)
    embeddings = lora_embeddings(args.source, tensors)
    tensors = split_bundled(tensors)[0]
    family = lora_family(list(tensors), metadata)
    source = str(args.source)
    adapters = adapter_tensors(family, tensors, source, metadata)
    if args.layout == "diffusers":
        paths = reference_paths(family, [key.split(".", 1)[0] for key in adapters])
    else:
        paths = {}
    converted, layout_metadata = file_tensors(family, adapters, args.layout, paths, source)
    if args.save_precision:
        dtype = save_dtype(args.save_precision)
        converted = {key: value if key.endswith(".alpha") else value.to(dtype) for key, value in converted.items()}
    out = check_output(args.out)
    if args.layout == "kohya":
        for token, vectors in embeddings.items():
            converted.update(bundle_tensors(token, vectors))
    elif embeddings:
        write_companion(out, embeddings, metadata)
    recipe = {"tool": "convert", "source": args.source.name, "layout": args.layout}
    write_lora_file(out, converted, {**derived_metadata(metadata, recipe), **layout_metadata})
    kept = kept_embeddings(embeddings if args.layout == "kohya" else {})
    print(f"wrote {out} ({family.name} LoRA, {args.layout} layout) from {args.source}{kept}")
    return True


def write_companion(out: Path, embeddings: Embeddings, metadata: dict[str, str]) -> None:
    """Write a LoRA's embedding beside ``out`` as ``<out>_emb.safetensors`` (a layout that cannot hold it)."""
    if len(embeddings) > 1:
        raise ToolError(
            f"{out}: the diffusers layout holds no embeddings and one file goes beside it, but the LoRA has "
            f"{len(embeddings)} ({', '.join(sorted(embeddings))}); convert to --layout kohya, which bundles them all"
        )
    (token, vectors), = embeddings.items()
    companion = embedding_companion(out)
    kept = {key: metadata[key] for key in ("ss_base_model_version", "modelspec.architecture") if key in metadata}
    write_embedding_file(companion, vectors, {**kept, TOKEN_KEY: token})
    print(f"the diffusers layout holds no embedding: {token!r} written beside it as {companion} "
          "(diffusers: load_textual_inversion)")


def run(args: argparse.Namespace) -> int:
    if convert_lora(args) or convert_hypernetwork(args) or convert_embedding(args):
        return 0
    model, origin = load_source(args)
    precision = args.save_precision or "fp16"
    dtype = save_dtype(precision)
    recipe = {"tool": "convert", **origin, "precision": precision}
    if args.out.suffix.lower() == ".safetensors":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(args.out, model, recipe, dtype=dtype)
    elif args.out.suffix:
        raise ToolError(f"{args.out}: --out must be a .safetensors file or a folder name without an extension")
    else:
        write_diffusers_folder(model, args.out, dtype)
    print(f"wrote {args.out} ({model.family.name}, {precision}) from {args.source}")
    return 0
