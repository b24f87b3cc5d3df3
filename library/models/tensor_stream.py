"""Read a ``.safetensors`` file one tensor at a time, cast as it is read, without memory-mapping the file.

Loading a model in a narrower dtype than it is stored in (fp32 file, bf16 frozen weights) through a full state
dict holds both copies at once; a memory-mapped file is no better, because every page read stays resident (and is
counted in the process's RSS) until the whole mapping is released. Plain reads into a buffer that is freed after
the cast keep the peak at the loaded model plus one tensor.
"""

from __future__ import annotations

import json
import struct
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
    """A read-only mapping over a safetensors file: each look-up reads (and casts) that one tensor.

    ``shapes`` gives every tensor as a meta tensor (shape and stored dtype, no data) for architecture inference.
    Non-floating tensors are never cast. Use as a context manager, or call :meth:`close`.
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
        # A tensor that is cast is read into one reused scratch buffer: fresh buffers freed after each cast
        # fragment the heap and the process keeps much of them.
        buffer = self._scratch(end - begin) if cast else torch.empty(end - begin, dtype=torch.uint8)
        self._file.seek(self._data_start + begin)
        if self._file.readinto(buffer.numpy()) != end - begin:
            raise ModelLoadError(f"{self.path}: truncated at tensor {key!r}; the file is incomplete")
        tensor = buffer.view(dtype).reshape(shape) if buffer.numel() else torch.empty(shape, dtype=dtype)
        return tensor.to(target) if cast else tensor

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
