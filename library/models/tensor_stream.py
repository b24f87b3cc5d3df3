"""Read a ``.safetensors`` file one tensor at a time: cast as it is read, or memory-mapped when kept as stored.

Loading a model in a narrower dtype than it is stored in (fp32 file, bf16 frozen weights) through a full state
dict holds both copies at once; a memory-mapped file is no better there, because every page read stays resident
(and is counted in the process's RSS) until the whole mapping is released. Plain reads into a buffer that is freed
after the cast keep the peak at the loaded model plus one tensor.

A tensor kept in its stored dtype lies in a private (copy-on-write) mapping of its bytes in the file instead: no
copy is made and nothing is read until the tensor is used, which turns seconds of page-zeroing and copying for a
full-size UNet into nothing. Each tensor has a mapping (and a storage) of its own, so a tensor that is released or
replaced (a component freed after caching, a conv weight re-laid out channels-last) gives its pages back, and savers
that refuse tensors sharing memory (safetensors, accelerate's state) see ordinary tensors.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import struct
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

from library.models.errors import ModelLoadError

_DTYPES = {
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
    rewritten while they are in use. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: Path, dtype_for: DtypeFor = lambda key: None) -> None:
        self.path, self.dtype_for = Path(path), dtype_for
        self._buffer: torch.Tensor | None = None
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
        if not cast:
            return self._mapped(dtype, shape, begin, end)
        # A tensor that is cast is read into one reused scratch buffer: fresh buffers freed after each cast
        # fragment the heap and the process keeps much of them.
        buffer = self._scratch(end - begin)
        self._file.seek(self._data_start + begin)
        if self._file.readinto(buffer.numpy()) != end - begin:
            raise ModelLoadError(f"{self.path}: truncated at tensor {key!r}; the file is incomplete")
        tensor = buffer.view(dtype).reshape(shape) if buffer.numel() else torch.empty(shape, dtype=dtype)
        return tensor.to(target)

    def _mapped(self, dtype: torch.dtype, shape: list[int], begin: int, end: int) -> torch.Tensor:
        """The stored bytes as a tensor in a private mapping of just them (a copy only when misaligned)."""
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        offset = self._data_start + begin
        start = offset - offset % mmap.ALLOCATIONGRANULARITY  # mappings begin on a page boundary
        mapping = _map_private(self._file.fileno(), start, offset + end - begin - start)
        if offset % dtype.itemsize:
            raw = torch.frombuffer(mapping, dtype=torch.uint8, count=end - begin, offset=offset - start)
            return raw.clone().view(dtype).reshape(shape)
        count = (end - begin) // dtype.itemsize
        return torch.frombuffer(mapping, dtype=dtype, count=count, offset=offset - start).reshape(shape)

    def _scratch(self, size: int) -> torch.Tensor:
        if self._buffer is None or self._buffer.numel() < size:
            self._buffer = None
            self._buffer = torch.empty(size, dtype=torch.uint8)
        return self._buffer[:size]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._buffer = None
        self._file.close()

    def __enter__(self) -> StreamedTensors:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_LIBC.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


def _map_private(fd: int, offset: int, length: int) -> ctypes.Array:
    """A copy-on-write mapping of ``length`` bytes of ``fd`` from ``offset`` (page-aligned), as a writable buffer
    that unmaps itself once its last user (a tensor's storage) lets go. Unlike :class:`mmap.mmap`, which keeps a
    duplicate file descriptor per mapping, it holds none: a model has more tensors than the usual limit of 1024
    open files."""
    address = _LIBC.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, offset)
    if address in (None, _MAP_FAILED):
        error = ctypes.get_errno()
        raise OSError(error, f"cannot map {length} bytes at {offset}: {os.strerror(error)}")
    buffer = (ctypes.c_char * length).from_address(address)
    weakref.finalize(buffer, _LIBC.munmap, address, length)
    return buffer


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
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ModelLoadError(f"{path}: tensor {key!r} has unsupported dtype {info.get('dtype')!r}")
        entries[key] = (dtype, list(info["shape"]), tuple(info["data_offsets"]))
    data_end = 8 + header_size + max((end for _, _, (_, end) in entries.values()), default=0)
    if data_end > path.stat().st_size:
        raise ModelLoadError(
            f"{path}: truncated ({path.stat().st_size} of {data_end} bytes); the download is incomplete"
        )
    return entries, metadata, 8 + header_size
