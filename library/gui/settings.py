"""Server settings from the `run_gui.sh` command line; refuses an exposed server without a token, and a blank token."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .thumbnails import MAX_THUMBNAILS

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "FURNACE_GUI_TOKEN"
MODELS_ROOT_FLAG = "--models-root"
DATASETS_ROOT_FLAG = "--datasets-root"


@dataclass(frozen=True)
class Trainer:
    """A trainer script and how the form presents it: the config sections only it reads (hidden for the other
    trainers) and the options a user sets for every run of it (shown first; the rest sit under "Advanced")."""

    script: str
    label: str
    sections: tuple[str, ...]
    essentials: tuple[str, ...]


_FIRST = ("model.pretrained_model_name_or_path", "dataset.train_data_dir")
_LENGTH = ("dataset.resolution", "training.max_train_steps", "training.max_train_epochs", "optimizer.learning_rate",
           "output.output_name")
TRAINERS = {  # a run's trainer -> its script and form
    "lora": Trainer("train_network.py", "LoRA", ("network", "deepspeed", "textual_inversion"),  # pivotal tuning
                    (*_FIRST, "dataset.caption_prefix", *_LENGTH, "network.dim", "network.alpha")),
    "dreambooth": Trainer("train_dreambooth.py", "DreamBooth", ("dreambooth", "network", "deepspeed"),
                          (*_FIRST, "dreambooth.instance_prompt", "dreambooth.class_prompt", *_LENGTH,
                           "dreambooth.train_method")),
    "textual_inversion": Trainer("train_textual_inversion.py", "Textual inversion", ("textual_inversion",),
                                 (*_FIRST, "textual_inversion.token_string", "textual_inversion.init_word", *_LENGTH,
                                  "textual_inversion.num_vectors_per_token")),
    "hypernetwork": Trainer("train_hypernetwork.py", "Hypernetwork", ("hypernetwork",),
                            (*_FIRST, "dataset.caption_prefix", *_LENGTH, "hypernetwork.layer_structure")),
}
TrainerName = Literal[tuple(TRAINERS)]  # the API's trainer field, from the one table above


class SettingsError(ValueError):
    """A server option that cannot work, as one line saying what to pass instead."""


@dataclass
class GuiSettings:
    """Where runs live, which folders hold models and datasets, and how trainers are launched."""

    workdir: Path
    runs_root: Path
    model_roots: list[Path]
    dataset_roots: list[Path]
    configs_dir: Path
    host: str = "127.0.0.1"
    port: int = 28000
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_concurrent: int = 1
    launcher: str = "python"
    tensorboard_port: int = 6006
    max_thumbnails: int = MAX_THUMBNAILS

    @staticmethod
    def trainer_script(trainer: str) -> Path:
        """The trainer script (`TRAINERS`) beside this package, whatever folder relative config paths start from."""
        return Path(__file__).resolve().parents[2] / TRAINERS[trainer].script


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_gui.sh", description="Furnace web front-end: form, queue, progress.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=28000)
    parser.add_argument("--listen", action="store_true", help="bind all interfaces (needs --token)")
    parser.add_argument("--token", help=f"API token (or ${TOKEN_ENV})")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="a host name browsers may use for this server besides its own (repeatable), "
                             "e.g. the name a reverse proxy forwards")
    parser.add_argument("--tensorboard-port", type=int, default=6006,
                        help="loopback port of the TensorBoard child, served through /tensorboard/ (0 = not started)")
    parser.add_argument("--workdir", type=Path, default=Path.cwd(), help="where relative config paths start")
    parser.add_argument("--runs-root", type=Path, help="folder of GUI runs (default: output/runs)")
    parser.add_argument(MODELS_ROOT_FLAG, type=Path, action="append", help="folder of base models (repeatable)")
    parser.add_argument(DATASETS_ROOT_FLAG, type=Path, action="append", help="folder of datasets (repeatable)")
    parser.add_argument("--configs-dir", type=Path, help="folder of preset TOMLs (default: configs)")
    parser.add_argument("--max-concurrent", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--launcher", choices=("python", "accelerate"), default="python",
                        help="start trainers with the venv python or with `accelerate launch`")
    parser.add_argument("--max-thumbnails", type=int, default=MAX_THUMBNAILS,
                        help=f"dataset thumbnails kept cached under the runs root (default {MAX_THUMBNAILS}, about "
                             "15 KB each); the least recently shown go first")
    return parser


def parse_settings(argv: Sequence[str]) -> GuiSettings:
    """Command line -> settings. Raises SettingsError for an exposed server without a token."""
    args = _parser().parse_args(list(argv))
    token, source = (args.token, "--token") if args.token is not None else (os.environ.get(TOKEN_ENV), f"${TOKEN_ENV}")
    if token is not None and not token.strip():
        raise SettingsError(f"{source} is blank: give a token, or none at all on a loopback address")
    host = "0.0.0.0" if args.listen else args.host
    if host not in LOOPBACK and not token:
        raise SettingsError(f"--listen / --host {host} exposes the trainer: also pass --token T (or set ${TOKEN_ENV})")
    if args.max_concurrent < 1:
        raise SettingsError("--max-concurrent must be at least 1")
    if args.max_thumbnails < 1:
        raise SettingsError("--max-thumbnails must be at least 1")
    workdir = args.workdir.resolve()

    def under(path: Path | None, default: str) -> Path:
        return (workdir / (path or default)).resolve()

    return GuiSettings(
        workdir=workdir,
        runs_root=under(args.runs_root, "output/runs"),
        model_roots=[under(p, "") for p in args.models_root] if args.models_root
        else [under(None, "models"), under(None, "output/_models")],
        dataset_roots=[under(p, "") for p in args.datasets_root] if args.datasets_root else [under(None, "datasets")],
        configs_dir=under(args.configs_dir, "configs"),
        host=host,
        port=args.port,
        token=token,
        allowed_hosts=tuple(args.allowed_host),
        max_concurrent=args.max_concurrent,
        launcher=args.launcher,
        tensorboard_port=args.tensorboard_port,
        max_thumbnails=args.max_thumbnails,
    )


def exit_on_settings_error(argv: Sequence[str]) -> GuiSettings:
    """`parse_settings`, with a bad option shown as one line and exit code 2."""
    try:
        return parse_settings(argv)
    except SettingsError as error:
        sys.stderr.write(f"run_gui.sh: {error}\n")
        raise SystemExit(2) from None
