"""'python -m library.toyworld': the toy world's vocabulary, renders, judge, concept dataset and base-model recipe."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from library.command_line import exit_without_teardown, run_subcommand, subcommand_parser


class ToyWorldError(ValueError):
    """A bad argument of a toy-world command; shown as one line."""


def _describe(args: argparse.Namespace) -> int:
    from library.toyworld.base_model import base_model_file, ensure_config_folder
    from library.toyworld.world import (
        BACKGROUND_NAME,
        COLOURS,
        HELD_OUT_COLOURS,
        IMAGE_SIZE,
        PRETRAINING_COLOURS,
        QUICKSTART_CONCEPT,
        SHAPES,
    )

    facts = {
        "image_size": IMAGE_SIZE,
        "background": BACKGROUND_NAME,
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "shapes": list(SHAPES),
        "pretraining_colours": list(PRETRAINING_COLOURS),
        "held_out": {"colours": list(HELD_OUT_COLOURS)},
        "quickstart_concept": asdict(QUICKSTART_CONCEPT),
        "base_model": str(base_model_file()),
        "base_model_config": str(ensure_config_folder()),
    }
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        concept = QUICKSTART_CONCEPT
        print(f"{IMAGE_SIZE} px scenes: one shape ({', '.join(SHAPES)}) on a {BACKGROUND_NAME} background")
        print(f"pretraining colours: {', '.join(PRETRAINING_COLOURS)}; held out: {', '.join(HELD_OUT_COLOURS)}")
        print(f"quickstart concept: {concept.trigger} = a {concept.colour} {concept.shape}")
        print(f"base model: {facts['base_model']} (config folder {facts['base_model_config']})")
    return 0


def _render(args: argparse.Namespace) -> int:
    from library.toyworld.datasets import write_renders

    if args.n < 1:
        raise ToyWorldError("--n must be at least 1")
    labels = write_renders(args.out, args.n, args.seed)
    print(f"wrote {args.n} renders with captions and {labels}")
    return 0


def _judge(args: argparse.Namespace) -> int:
    from library.data.images import list_images
    from library.toyworld.judge import judge_file

    if not args.folder.is_dir():
        raise ToyWorldError(f"{args.folder}: not a folder")
    verdicts = [{"file": path.name, **asdict(judge_file(path))} for path in list_images(args.folder)]
    if args.json:
        print(json.dumps(verdicts, indent=1))
    else:
        for verdict in verdicts:
            print(f"{verdict['file']}: {verdict['colour']} {verdict['shape']}")
    return 0


def _dataset(args: argparse.Namespace) -> int:
    from library.toyworld.datasets import write_concept_dataset
    from library.toyworld.world import QUICKSTART_CONCEPT

    folder = write_concept_dataset(args.out, QUICKSTART_CONCEPT, args.count, args.repeats, args.seed)
    concept = QUICKSTART_CONCEPT
    print(f"wrote {args.count} pictures of {concept.trigger} (a {concept.colour} {concept.shape}) to {folder}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from library.toyworld.base_model import build_base_model
    from library.toyworld.pretrain import DiffusionSettings, VaeSettings

    vae = VaeSettings() if args.vae_steps is None else VaeSettings(steps=args.vae_steps)
    diffusion = DiffusionSettings()
    if args.unet_steps is not None or args.scenes is not None:
        diffusion = DiffusionSettings(steps=args.unet_steps or diffusion.steps, scenes=args.scenes or diffusion.scenes)
    path = build_base_model(args.out, args.seed, vae, diffusion)
    print(f"wrote {path}")
    return 0


def _add_describe(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("describe", help="vocabulary, held-out colours, quickstart concept, model paths")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=_describe)


def _add_render(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("render", help="labelled renders: images, captions, labels.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100, help="number of images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_render)


def _add_judge(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("judge", help="name the colour and shape of every image in a folder")
    parser.add_argument("folder", type=Path, metavar="DIR")
    parser.add_argument("--json", action="store_true", help='print [{"file", "colour", "shape"}]')
    parser.set_defaults(run=_judge)


def _add_dataset(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dataset", help="the quickstart concept's training pictures (N_trigger folder)")
    parser.add_argument("--out", type=Path, default=Path("datasets/quickstart"))
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_dataset)


def _add_build(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build", help="pretrain the toy base model from scratch (VAE, then UNet + text encoder)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for toyworld-sd1.safetensors and its configs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, help="VAE training steps (default: the recipe's)")
    parser.add_argument("--unet-steps", type=int, help="UNet + text encoder steps (default: the recipe's)")
    parser.add_argument("--scenes", type=int, help="scenes encoded for the UNet stage (default: the recipe's)")
    parser.set_defaults(run=_build)


_COMMANDS = [SimpleNamespace(add_parser=add) for add in (_add_describe, _add_render, _add_judge, _add_dataset,
                                                          _add_build)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = subcommand_parser("python -m library.toyworld", __doc__, "command", _COMMANDS)
    from library.data.images import ImageLoadError

    return run_subcommand(parser.parse_args(argv), (ToyWorldError, ImageLoadError))


if __name__ == "__main__":
    exit_without_teardown(main())
