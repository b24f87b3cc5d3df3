"""Read a ``.safetensors`` file one tensor at a time: cast as it is read, or memory-mapped if asked and kept as stored.

Loading a model in a narrower dtype than it is stored in (fp32 file, bf16 frozen weights) through a full state
dict holds both copies at once; a memory-mapped file is no better there, because every page read stays resident
(and is counted in the process's RSS) until the whole mapping is released. Plain reads into a buffer that is freed
after the cast keep the peak at the loaded model plus one tensor.

With ``map_uncast``, a tensor kept in its stored dtype is a view of one private (copy-on-write) mapping of the whole
file: nothing is copied and nothing is read until the tensor is used, which turns seconds of page-zeroing and
copying for a full-size UNet into milliseconds. The mapping is torch's own (``torch.from_file``), unmapped by torch
without Python once its last view is gone, so the last reference may be dropped on any thread, including a process
group's worker thread while the interpreter is busy tearing that group down (a storage holding a Python buffer would
wait there for the GIL forever). One mapping per file (not per tensor: ``from_file`` maps from the file's start, and
a thousand overlapping mappings of one file make every kernel walk over its pages -- reclaim, access sampling --
visit each of them) means a component's pages are given back when all of that file's tensors are released (a
diffusers folder has a file per component), and that every view's storage is the whole file: savers that reason
about storages (safetensors, checkpoint sharding, ``torch.save``) would refuse them or write the file whole. Map
only weights that stay frozen and are never saved as a model.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

from library.models.errors import ModelLoadError

logger = logging.getLogger(__name__)

# The dtype codes of the safetensors format.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}

DtypeFor = Callable[[str], torch.dtype | None]
"""The dtype a key's floating-point tensor is cast to (None keeps the stored dtype)."""


class StreamedTensors(Mapping[str, torch.Tensor]):
    """A read-only mapping over a safetensors file: each look-up reads and casts that one tensor, or maps it.

    ``shapes`` gives every tensor as a meta tensor (shape and stored dtype, no data) for architecture inference.
    Non-floating tensors are never cast. Mapped tensors stay valid after :meth:`close`; the file must not be
    rewritten in place while they are in use. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: Path, dtype_for: DtypeFor = lambda key: None, map_uncast: bool = False) -> None:
        self.path, self.dtype_for = Path(path), dtype_for
        self._buffer: torch.Tensor | None = None
        self._may_map = map_uncast
        self._mapping: torch.Tensor | None = None
        self._file = self.path.open("rb")
        try:
            self._entries, self.metadata, self._data_start = _read_header(self._file, self.path)
        except BaseException:
            self._file.close()
            raise

    @property
    def shapes(self) -> dict[str, torch.Tensor]:
        return {key: torch.empty(shape, dtype=dtype, device="meta") for key, (dtype, shape, _) in self._entries.items()}

    def __getitem__(self, key: str) -> torch.Tensor:
        dtype, shape, (begin, end) = self._entries[key]
        target = self.dtype_for(key)
        cast = target is not None and dtype.is_floating_point and dtype != target
        if not cast and end > begin and (self._data_start + begin) % dtype.itemsize == 0:
            mapped = self._mapped(begin, end)
            if mapped is not None:
                return mapped.view(dtype).reshape(shape)
        # A tensor that is cast is read into one reused scratch buffer: fresh buffers freed after each cast
        # fragment the heap and the process keeps much of them.
        buffer = self._scratch(end - begin) if cast else torch.empty(end - begin, dtype=torch.uint8)
        self._file.seek(self._data_start + begin)
        if self._file.readinto(buffer.numpy()) != end - begin:
            raise ModelLoadError(f"{self.path}: truncated at tensor {key!r}; the file is incomplete")
        tensor = buffer.view(dtype).reshape(shape) if buffer.numel() else torch.empty(shape, dtype=dtype)
        return tensor.to(target) if cast else tensor

    def _mapped(self, begin: int, end: int) -> torch.Tensor | None:
        """The tensor's bytes as a view of the file's mapping, or None where mapping is refused (a cap on address
        space, strict overcommit): then every tensor is read instead."""
        if self._mapping is None and self._may_map:
            size = os.fstat(self._file.fileno()).st_size
            try:
                self._mapping = torch.from_file(str(self.path), shared=False, size=size, dtype=torch.uint8)
            except RuntimeError as error:
                logger.debug("%s: reading instead of mapping (%s)", self.path, error)
                self._may_map = False
        if self._mapping is None:
            return None
        return self._mapping[self._data_start + begin:self._data_start + end]

    def _scratch(self, size: int) -> torch.Tensor:
        if self._buffer is None or self._buffer.numel() < size:
            self._buffer = None
            self._buffer = torch.empty(size, dtype=torch.uint8)
        return self._buffer[:size]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, key: object) -> bool:
        # Mapping's default would read the tensor to answer.
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._buffer = self._mapping = None  # mapped views keep the mapping alive
        self._file.close()

    def __enter__(self) -> StreamedTensors:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read_header(handle, path: Path) -> tuple[dict[str, tuple[torch.dtype, list[int], tuple[int, int]]], dict, int]:
    """(entries, metadata, offset of the data block) from the safetensors header; clear errors for bad files."""
    size_bytes = handle.read(8)
    if len(size_bytes) != 8:
        raise ModelLoadError(f"{path}: not a readable .safetensors file (too short); the download may be incomplete")
    (header_size,) = struct.unpack("<Q", size_bytes)
    try:
        header = json.loads(handle.read(header_size))
    except (ValueError, MemoryError, OverflowError):
        raise ModelLoadError(f"{path}: not a readable .safetensors file (bad header)") from None
    metadata = header.pop("__metadata__", None) or {}
    entries = {}
    for key, info in header.items():
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ModelLoadError(f"{path}: tensor {key!r} has unsupported dtype {info.get('dtype')!r}")
        entries[key] = (dtype, list(info["shape"]), tuple(info["data_offsets"]))
    data_end = 8 + header_size + max((end for _, _, (_, end) in entries.values()), default=0)
    if data_end > path.stat().st_size:
        raise ModelLoadError(
            f"{path}: truncated ({path.stat().st_size} of {data_end} bytes); the download is incomplete"
        )
    return entries, metadata, 8 + header_size
