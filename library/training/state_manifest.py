"""The manifest of a saved training state: every file's size and sha256, and what the state was saved for.

A resume that loads a damaged file either fails deep inside torch or, for the random-number states, carries on
silently and is no longer exact. So the manifest is written last into the staging folder (it is swapped in with
the folder) and checked before anything loads: a file that is missing, of another size or another hash, or a run
whose trained tensors, optimizer or process count differ from the saving run's, is refused with one line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from pydantic import BaseModel, ValidationError

from library.atomic_files import write_text_atomic
from library.training.exceptions import ResumeError

MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 20
_WHAT_TO_DO = "restore the state folder from a copy, or start again without training.resume"


class SavedFor(BaseModel, frozen=True):
    """What a state fits: the optimizer, the number of processes, the shape of every trained tensor and whether
    the run keeps an EMA of them."""

    optimizer: str
    processes: int
    tensors: dict[str, list[int]]
    ema: bool = False


class _SavedFile(BaseModel):
    size: int
    sha256: str


class _Manifest(BaseModel):
    files: dict[str, _SavedFile]
    saved_for: SavedFor


def trained_shapes(modules: dict[str, torch.nn.Module]) -> dict[str, list[int]]:
    """``{"<part>.<parameter>": shape}`` of every trainable tensor of the named modules. Under DeepSpeed ZeRO-3 a
    parameter's own shape is its partition; ``ds_shape`` is the full one."""
    return {
        f"{part}.{name}": list(getattr(parameter, "ds_shape", parameter.shape))
        for part, module in modules.items()
        for name, parameter in module.named_parameters()
        if parameter.requires_grad
    }


def write_manifest(folder: Path, saved_for: SavedFor) -> None:
    """Record every file under ``folder`` (call when all of them are written) and what the state fits."""
    files = {
        path.relative_to(folder).as_posix(): _SavedFile(size=path.stat().st_size, sha256=_sha256(path))
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    write_text_atomic(folder / MANIFEST_FILE, _Manifest(files=files, saved_for=saved_for).model_dump_json(indent=1))


def verify_state(folder: Path, expected: SavedFor) -> None:
    """Raise ResumeError (naming the file or setting) unless ``folder`` is whole and fits this run."""
    manifest = _read_manifest(folder)
    _check_fit(folder, manifest.saved_for, expected)
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ResumeError(f"training.resume: {path} is missing from the saved state; {_WHAT_TO_DO}")
        size = path.stat().st_size
        if size != entry.size:
            raise ResumeError(f"training.resume: {path} is damaged ({size} bytes, {entry.size} when saved); "
                              f"{_WHAT_TO_DO}")
        if _sha256(path) != entry.sha256:
            raise ResumeError(f"training.resume: {path} is damaged (its sha256 differs from when it was saved); "
                              f"{_WHAT_TO_DO}")


def _read_manifest(folder: Path) -> _Manifest:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ResumeError(f"training.resume: {path} is missing, so the state cannot be checked (saved incompletely "
                          "or by an older version); start again without training.resume")
    try:
        return _Manifest.model_validate_json(path.read_bytes())
    except ValidationError as error:
        problem = error.errors()[0]["msg"]
        raise ResumeError(f"training.resume: {path} is damaged ({problem}); {_WHAT_TO_DO}") from None


def _check_fit(folder: Path, saved: SavedFor, run: SavedFor) -> None:
    if saved.processes != run.processes:
        raise ResumeError(f"training.resume: {folder} was saved by {saved.processes} process(es), this run has "
                          f"{run.processes}; resume with {saved.processes}")
    if saved.optimizer != run.optimizer:
        raise ResumeError(f"training.resume: {folder} was saved with optimizer.type {saved.optimizer!r}, this run "
                          f"uses {run.optimizer!r}; resume with optimizer.type = {saved.optimizer!r}")
    if saved.ema != run.ema:
        held, keeps = ("holds", "keeps none") if saved.ema else ("holds no", "keeps one")
        raise ResumeError(f"training.resume: {folder} {held} EMA weights and this run {keeps}; resume with the EMA "
                          "settings of the run that saved it (network.ema_decay, dreambooth.use_ema: see its "
                          "config.toml)")
    if saved.tensors == run.tensors:
        return
    differing = sorted(name for name in saved.tensors.keys() | run.tensors.keys()
                       if saved.tensors.get(name) != run.tensors.get(name))
    name = differing[0]
    shapes = f"{_shape(saved.tensors.get(name))} saved, {_shape(run.tensors.get(name))} in this run"
    raise ResumeError(f"training.resume: {folder} was saved for other trained tensors ({len(differing)} differ, e.g. "
                      f"{name}: {shapes}); resume with the network and training settings of the run that saved it "
                      f"(network.dim, network.conv_dim, what trains: see its config.toml)")


def _shape(shape: list[int] | None) -> str:
    return "absent" if shape is None else "x".join(map(str, shape)) or "scalar"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
