"""The names of the weight files a run saves into its output folder, and the order it trained them in.

Final: ``<name>.safetensors``. Intermediate, as sd-scripts names them so existing tools recognise them:
``<name>-<epoch:06d>.safetensors`` every N epochs and ``<name>-step<step:08d>.safetensors`` every N steps.
A LoRA run that saves both its EMA and its trained ("raw") weights writes the raw ones as a run of their own named
``<name>-raw`` (``<name>-raw.safetensors``, ``<name>-raw-step00000100.safetensors``, ...), so they are kept,
pruned and compared like any run's files. A name alone cannot place an epoch file among step files, so training order is each file's trained step count
(its ``ss_steps`` metadata; a file without it is placed by the number in its name), a run's final file after its
intermediate ones. A file may have companions saved with it under the same name (a hypernetwork's ``.pt``, a
pivotal-tuning run's separate embedding ``<file name>_emb.safetensors``); they follow it. The trainer's saver and pruner, its compare grid and the ``compare`` tool all go by this module.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from library.models.checkpoint_io import read_safetensors_metadata
from library.networks.pivotal_embeddings import EMBEDDING_SUFFIX, embedding_companion

EXTENSION = ".safetensors"
COMPANION_EXTENSIONS = (".pt",)  # a hypernetwork run's A1111 .pt beside each of its .safetensors files
RAW_SUFFIX = "-raw"
_SUFFIX = r"(?:-(?P<epoch>\d{6})|-step(?P<step>\d{8}))?" + re.escape(EXTENSION)
_ANY_RUN = re.compile(r"(?P<name>.+?)" + _SUFFIX)

Kind = Literal["epoch", "step", "final"]


def final_path(output_dir: Path, output_name: str) -> Path:
    return output_dir / f"{output_name}{EXTENSION}"


def epoch_path(output_dir: Path, output_name: str, epoch: int) -> Path:
    return output_dir / f"{output_name}-{epoch:06d}{EXTENSION}"


def step_path(output_dir: Path, output_name: str, step: int) -> Path:
    return output_dir / f"{output_name}-step{step:08d}{EXTENSION}"


def companions(path: Path) -> list[Path]:
    """The files saved together with weight file ``path`` under its name (that exist)."""
    candidates = [path.with_suffix(extension) for extension in COMPANION_EXTENSIONS] + [embedding_companion(path)]
    return [companion for companion in candidates if companion.is_file()]


def is_companion(path: Path) -> bool:
    """Whether ``path`` is the separate embedding saved with a LoRA file that is beside it."""
    owner = path.with_name(path.name.removesuffix(EMBEDDING_SUFFIX + EXTENSION) + EXTENSION)
    return owner != path and embedding_companion(owner) == path and owner.is_file()


def raw_name(output_name: str) -> str:
    """The output name of the raw weights saved beside a run's EMA files."""
    return f"{output_name}{RAW_SUFFIX}"


def raw_companion(path: Path, output_name: str) -> Path:
    """The raw-weights file saved with run ``output_name``'s file ``path`` (final, epoch or step)."""
    if not path.name.startswith(output_name):
        raise ValueError(f"{path.name} is not a file of run {output_name!r}")
    return path.with_name(raw_name(output_name) + path.name[len(output_name):])


@dataclass(frozen=True)
class RunFile:
    """A saved file as its name describes it: the run's ``output_name``, which save, and its epoch/step number
    (0 for the final file)."""

    path: Path
    output_name: str
    kind: Kind
    number: int


def parse_run_file(path: Path, output_name: str | None = None) -> RunFile | None:
    """What ``path``'s name says; None for a name no run writes (or, given ``output_name``, another run's file)."""
    if output_name is None:
        match = _ANY_RUN.fullmatch(path.name)
    else:
        match = re.fullmatch(re.escape(output_name) + _SUFFIX, path.name)
    if match is None:
        return None
    name = output_name if output_name is not None else match.group("name")
    if match.group("epoch") is not None:
        return RunFile(path, name, "epoch", int(match.group("epoch")))
    if match.group("step") is not None:
        return RunFile(path, name, "step", int(match.group("step")))
    return RunFile(path, name, "final", 0)


def _described(path: Path, output_name: str | None) -> RunFile:
    """``path`` as a run file; a name no run writes counts as the final file of a run of that name."""
    return parse_run_file(path, output_name) or RunFile(path, path.stem, "final", 0)


def trained_steps(path: Path, output_name: str | None = None) -> int:
    """The optimizer steps behind a weight file: its ``ss_steps`` metadata, else the number in its name."""
    recorded = read_safetensors_metadata(path).get("ss_steps", "")
    return int(recorded) if recorded.isdigit() else _described(path, output_name).number


def training_order(paths: Iterable[Path], output_name: str | None = None) -> list[Path]:
    """``paths`` grouped by run (output name) and, within a run, in the order it trained them, final file last.
    ``output_name`` reads the names as that run's (for a name that itself ends like a suffix, ``v-000001``)."""

    def key(path: Path) -> tuple[str, bool, int, int, str]:
        run_file = _described(path, output_name)
        return (run_file.output_name, run_file.kind == "final", trained_steps(path, output_name), run_file.number,
                path.name)

    return sorted(paths, key=key)


def run_files(output_dir: Path, output_name: str) -> list[Path]:
    """The weight files run ``output_name`` saved in ``output_dir``, in training order."""
    candidates = output_dir.glob(f"{glob.escape(output_name)}*{EXTENSION}")
    return training_order((path for path in candidates if parse_run_file(path, output_name)), output_name)


def intermediate_files(output_dir: Path, output_name: str, kind: Kind) -> list[RunFile]:
    """Run ``output_name``'s epoch or step files, oldest first (by the number in their names: no file is read)."""
    candidates = output_dir.glob(f"{glob.escape(output_name)}-*{EXTENSION}")
    found = [run_file for path in candidates if (run_file := parse_run_file(path, output_name)) is not None]
    return sorted((run_file for run_file in found if run_file.kind == kind), key=lambda run_file: run_file.number)
