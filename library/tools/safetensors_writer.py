"""Write a ``.safetensors`` file one tensor at a time, so a whole model never has to be in memory to be saved.

The format is an 8-byte little-endian header length, a JSON header (every tensor's dtype, shape and byte range in
the data block, plus ``__metadata__``), then the data block. Since every tensor's dtype and shape are known before
any is computed, the header is written first and each tensor's bytes go to their place as they come, in any order.
Tensors are laid out widest dtype first so that each one starts aligned to its element size. Writes are atomic:
an error leaves the target as it was.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import torch

from library.atomic_files import atomic_write
from library.models.tensor_stream import SAFETENSORS_DTYPES

_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}

TensorSpec = tuple[torch.dtype, tuple[int, ...]]


class SafetensorsWriter:
    """A ``.safetensors`` file being written: every key in ``specs`` must be given to :meth:`write` exactly once.

    Use as a context manager: the file is committed when the block ends normally, removed when it raises.
    """

    def __init__(self, path: Path, specs: Mapping[str, TensorSpec], metadata: Mapping[str, str]) -> None:
        not_strings = [key for key, value in metadata.items() if not isinstance(value, str)]
        if not_strings:
            raise ValueError(f"safetensors metadata values must be strings; {not_strings[0]!r} is not")
        self.path = Path(path)
        self._specs = dict(specs)
        header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
        self._offsets: dict[str, int] = {}
        offset = 0
        for key in sorted(self._specs, key=lambda key: -self._specs[key][0].itemsize):  # stable: keeps the order
            dtype, shape = self._specs[key]
            size = math.prod(shape) * dtype.itemsize
            header[key] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._offsets[key] = offset
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)
        self._data_start = 8 + len(encoded)
        self._commit = ExitStack()
        self._file = self._commit.enter_context(atomic_write(self.path))
        self._file.write(struct.pack("<Q", len(encoded)) + encoded)
        self._file.truncate(self._data_start + offset)
        self._pending = set(self._specs)

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Write one tensor, which must have the dtype and shape its spec promised."""
        if key not in self._pending:
            raise ValueError(f"{self.path}: {key!r} is not expected here or was written already")
        dtype, shape = self._specs[key]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(
                f"{self.path}: {key!r} is {tensor.dtype} {tuple(tensor.shape)}, its header says {dtype} {shape}"
            )
        self._file.seek(self._data_start + self._offsets[key])
        self._file.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self._pending.discard(key)

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None and self._pending:
            error = ValueError(f"{self.path}: {len(self._pending)} tensor(s) never written, e.g. "
                               f"{sorted(self._pending)[0]!r}")
            self._commit.__exit__(ValueError, error, None)
            raise error
        self._commit.__exit__(error_type, error, traceback)
