"""Hypernetwork files: A1111's ``.pt`` and the same content as ``.safetensors``.

The ``.pt`` is the dict A1111's ``Hypernetwork.save`` writes, made of tensors and plain values only, so
``torch.load(path, weights_only=True)`` reads it (and so does A1111)::

    {<width: int>: (<key MLP state dict>, <value MLP state dict>),   # e.g. 768: ({"linear.0.weight": ...}, {...})
     "step": int, "name": str, "layer_structure": [float], "activation_func": str, "is_layer_norm": bool,
     "weight_initialization": str, "use_dropout": bool, "dropout_structure": [float], "last_layer_dropout": bool,
     "activate_output": bool, "sd_checkpoint": str | None, "sd_checkpoint_name": str | None,
     "optional_info": str | None}

The ``.safetensors`` holds the same tensors under flat keys ``<width>.<k|v>.<MLP key>`` (``768.k.linear.0.weight``)
and every other entry JSON-encoded in its metadata as ``hypernetwork.<entry>`` (``hypernetwork.layer_structure =
"[1.0, 2.0, 1.0]"``), beside the run's ``ss_*`` and ``modelspec.*`` record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from library.atomic_files import atomic_path
from library.models.checkpoint_io import load_plain_pickle, read_safetensors_metadata, read_state_dict
from library.networks.hypernetwork import KEY, VALUE, Hypernetwork, HypernetworkOptions, default_dropout_structure
from library.networks.lora_file import LoraFileError

PT_SUFFIX, SAFETENSORS_SUFFIX = ".pt", ".safetensors"
METADATA_PREFIX = "hypernetwork."
_OLD_KEYS = {"linear1.": "linear.0.", "linear2.": "linear.1."}  # A1111's first hypernetworks


class HypernetworkFileError(LoraFileError):
    """A hypernetwork file that cannot be used; ``str()`` names the file and what is wrong."""


@dataclass(frozen=True)
class HypernetworkFile:
    """What a hypernetwork file holds: the MLP shape, each width's (key, value) state dicts, and A1111's other
    entries (step, name, sd_checkpoint...)."""

    options: HypernetworkOptions
    pairs: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]
    info: dict[str, object] = field(default_factory=dict)


def a1111_dict(hypernetwork: Hypernetwork, info: Mapping[str, object], dtype: torch.dtype) -> dict[object, object]:
    """The dict A1111 saves: ``info`` holds step, name, sd_checkpoint, sd_checkpoint_name and optional_info."""
    options = hypernetwork.options
    saved: dict[object, object] = {}
    for width in hypernetwork.widths:
        saved[width] = tuple(_plain(hypernetwork.mlp(width, role).state_dict(), dtype) for role in (KEY, VALUE))
    saved.update(
        layer_structure=list(options.layer_structure),
        activation_func=options.activation_func,
        is_layer_norm=options.add_layer_norm,
        weight_initialization=options.weight_init,
        use_dropout=options.use_dropout,
        dropout_structure=list(options.dropout_structure),
        last_layer_dropout=options.dropout_structure[-2] != 0,  # what A1111 records, whatever set the structure
        activate_output=options.activate_output,
    )
    saved.update(info)
    return saved


def _plain(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().to("cpu", dtype).contiguous() for key, tensor in state_dict.items()}


def write_pt(path: Path, saved: Mapping[object, object]) -> None:
    """Write A1111's ``.pt`` atomically (torch.save of plain values only)."""
    with atomic_path(path) as temporary:
        torch.save(dict(saved), temporary)


def safetensors_layout(saved: Mapping[object, object]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(flat tensors, ``hypernetwork.*`` metadata) of A1111's dict (module docstring)."""
    tensors, metadata = {}, {}
    for key, value in saved.items():
        if isinstance(key, int):
            for role, state_dict in zip((KEY, VALUE), value):
                tensors.update({f"{key}.{role}.{name}": tensor for name, tensor in state_dict.items()})
        else:
            metadata[METADATA_PREFIX + key] = json.dumps(value)
    return tensors, metadata


def write_safetensors(path: Path, saved: Mapping[object, object], metadata: Mapping[str, str]) -> None:
    """Write the ``.safetensors`` form of A1111's dict atomically, with the run's ``metadata`` beside its own."""
    tensors, own = safetensors_layout(saved)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={**metadata, **own})


def read_hypernetwork(path: Path) -> HypernetworkFile:
    """Read a ``.pt`` (never unpickling code) or ``.safetensors`` hypernetwork file."""
    if path.suffix.lower() == PT_SUFFIX:
        loaded = load_plain_pickle(path)
        if not isinstance(loaded, dict) or not any(isinstance(key, int) for key in loaded):
            raise HypernetworkFileError(f"{path}: not a hypernetwork (no dict keyed by context widths)")
        pairs = {key: _pair(path, key, value) for key, value in loaded.items() if isinstance(key, int)}
        info = {key: value for key, value in loaded.items() if not isinstance(key, int)}
    else:
        tensors, metadata = read_state_dict(path)
        info = {key[len(METADATA_PREFIX):]: _decoded(path, key, value) for key, value in metadata.items()
                if key.startswith(METADATA_PREFIX)}
        pairs = _unflatten(path, tensors)
    return HypernetworkFile(_options(path, info), pairs, info)


def is_hypernetwork(path: Path) -> bool:
    """Whether ``path`` looks like a hypernetwork file (reads the ``.pt``, or only the ``.safetensors`` header)."""
    if path.suffix.lower() == PT_SUFFIX:
        loaded = load_plain_pickle(path)
        return isinstance(loaded, dict) and any(isinstance(key, int) for key in loaded)
    return f"{METADATA_PREFIX}layer_structure" in read_safetensors_metadata(path)


def _pair(path: Path, width: int, value: object) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(sd, dict) for sd in value)):
        raise HypernetworkFileError(f"{path}: entry {width} is not a (key, value) pair of state dicts")
    return tuple({_renamed(name): tensor for name, tensor in state_dict.items()} for state_dict in value)


def _renamed(name: str) -> str:
    for old, new in _OLD_KEYS.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _unflatten(path: Path, tensors: Mapping[str, torch.Tensor]) -> dict[int, tuple[dict, dict]]:
    pairs: dict[int, tuple[dict, dict]] = {}
    for key, tensor in tensors.items():
        width, role, name = (key.split(".", 2) + ["", ""])[:3]
        if not width.isdigit() or role not in (KEY, VALUE) or not name:
            raise HypernetworkFileError(f"{path}: key {key!r} is not <width>.<k|v>.<layer key>")
        pairs.setdefault(int(width), ({}, {}))[0 if role == KEY else 1][name] = tensor
    if not pairs:
        raise HypernetworkFileError(f"{path}: holds no hypernetwork tensors")
    return pairs


def _decoded(path: Path, key: str, value: str) -> object:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise HypernetworkFileError(f"{path}: metadata {key} is not JSON ({value[:40]!r})") from None


def _options(path: Path, info: Mapping[str, object]) -> HypernetworkOptions:
    """The MLP shape, with A1111's defaults for what an older file leaves out."""
    try:
        structure = tuple(float(width) for width in info.get("layer_structure") or (1, 2, 1))
        use_dropout = bool(info.get("use_dropout", False))
        last_layer_dropout = bool(info.get("last_layer_dropout", False))
        dropout = info.get("dropout_structure")
        if dropout is None:
            dropout = default_dropout_structure(structure, use_dropout, last_layer_dropout)
        return HypernetworkOptions(
            layer_structure=structure,
            activation_func=str(info.get("activation_func") or "linear"),
            weight_init=str(info.get("weight_initialization") or "Normal"),
            add_layer_norm=bool(info.get("is_layer_norm", False)),
            use_dropout=use_dropout or any(dropout),
            dropout_structure=tuple(float(p) for p in dropout),
            activate_output=bool(info.get("activate_output", True)),  # A1111 reads a file without it so
            last_layer_dropout=last_layer_dropout,
        )
    except (TypeError, ValueError) as error:
        raise HypernetworkFileError(f"{path}: its layer settings cannot be read ({error})") from None


INFO_ENTRIES = ("step", "name", "sd_checkpoint", "sd_checkpoint_name", "optional_info")
"""A1111's entries that describe a file's training rather than its MLPs (:func:`a1111_dict`'s ``info``)."""


def trained_steps(path: Path, read: HypernetworkFile) -> int:
    """The steps the hypernetwork in ``read`` (read from ``path``) was trained: its ``step`` entry, 0 without one
    (as A1111 reads it), so a continued run counts on from it."""
    step = read.info.get("step")
    if step is None:
        return 0
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise HypernetworkFileError(f"{path}: its step entry {step!r} is not a step count; fix or remove it")
    return step


def load_hypernetwork(path: Path) -> Hypernetwork:
    """A :class:`Hypernetwork` holding a file's weights (fp32, eval mode); refuses weights of another shape."""
    return hypernetwork_of(path, read_hypernetwork(path))


def hypernetwork_of(path: Path, read: HypernetworkFile) -> Hypernetwork:
    """A :class:`Hypernetwork` holding the weights of ``read`` (read from ``path``), fp32, eval mode."""
    try:
        hypernetwork = Hypernetwork(read.pairs, read.options)
        for width, (key_state, value_state) in read.pairs.items():
            hypernetwork.mlp(width, KEY).load_state_dict(key_state)
            hypernetwork.mlp(width, VALUE).load_state_dict(value_state)
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise HypernetworkFileError(f"{path}: its weights do not fit its layer settings ({first})") from None
    return hypernetwork.float().eval()
