"""Several ``.safetensors`` files read as one original-layout state dict.

FLUX.1 comes as split files (``flux1-dev.safetensors`` transformer, ``ae.safetensors``, ``clip_l.safetensors``,
``t5xxl_fp16.safetensors``) or as one ComfyUI-style checkpoint holding all four under prefixes. Joining the split
files under the checkpoint's prefixes lets one converter read both: each file's keys get its component's prefix
unless they already carry it. Tensors are still read one at a time, as each file's :class:`StreamedTensors` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from library.models.errors import ModelLoadError
from library.models.tensor_stream import DtypeFor, StreamedTensors


class JoinedTensors(Mapping[str, torch.Tensor]):
    """``parts`` = (file, prefix) pairs; the first file's metadata is the model's. Use as a context manager."""

    def __init__(self, parts: list[tuple[Path, str]], map_uncast: bool = False) -> None:
        self.dtype_for: DtypeFor = lambda key: None
        self._streams: list[StreamedTensors] = []
        self._sources: dict[str, tuple[StreamedTensors, str]] = {}
        try:
            for path, prefix in parts:
                self._add(StreamedTensors(path, map_uncast=map_uncast), prefix)
        except BaseException:
            self.close()
            raise
        self.metadata = self._streams[0].metadata

    def _add(self, stream: StreamedTensors, prefix: str) -> None:
        self._streams.append(stream)
        has_prefix = any(key.startswith(prefix) for key in stream)
        for key in stream:
            joined = key if has_prefix else prefix + key
            if joined in self._sources:
                raise ModelLoadError(f"{stream.path}: tensor {joined!r} is also in {self._sources[joined][0].path}")
            self._sources[joined] = (stream, key)
        stream.dtype_for = lambda key, add=("" if has_prefix else prefix): self.dtype_for(add + key)

    @property
    def shapes(self) -> dict[str, torch.Tensor]:
        shapes = {}
        for stream in self._streams:
            own = stream.shapes
            shapes.update({joined: own[key] for joined, (source, key) in self._sources.items() if source is stream})
        return shapes

    def __getitem__(self, key: str) -> torch.Tensor:
        stream, own_key = self._sources[key]
        return stream[own_key]

    def __contains__(self, key: object) -> bool:
        return key in self._sources

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def close(self) -> None:
        for stream in self._streams:
            stream.close()

    def __enter__(self) -> JoinedTensors:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def split_file_parts(
    path: Path, prefixes: Mapping[str, str], split_files: Mapping[str, Path | None], keys: set[str]
) -> list[tuple[Path, str]]:
    """(file, prefix) of the model file and each split file given; ``prefixes`` maps a split-file option ("ae",
    "clip_l", "t5xxl"; "" for the model file itself) to its component's prefix. A component that is neither in the
    model file (``keys``) nor given as a split file is refused naming the option to set."""
    parts = [(path, prefixes[""])]
    for option, prefix in prefixes.items():
        if not option:
            continue
        given = split_files.get(option)
        if given is not None:
            parts.append((Path(given).expanduser(), prefix))
            if not parts[-1][0].is_file():
                raise ModelLoadError(f"model.{option}: not found: {parts[-1][0]}")
        elif not any(key.startswith(prefix) for key in keys):
            raise ModelLoadError(
                f"{path} holds no {prefix.rstrip('.')} weights; set model.{option} to the separate {option} file "
                f"(e.g. {option}.safetensors)"
            )
    return parts
