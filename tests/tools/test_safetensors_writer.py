"""The streaming .safetensors writer: a file safetensors reads back, committed only when complete."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from library.tools.safetensors_writer import SafetensorsWriter

TENSORS = {"a.weight": torch.arange(6, dtype=torch.float16).reshape(2, 3), "b.bias": torch.ones(4)}
SPECS = {key: (tensor.dtype, tuple(tensor.shape)) for key, tensor in TENSORS.items()}


@pytest.fixture
def existing(tmp_path):
    path = tmp_path / "merged.safetensors"
    save_file({"old": torch.zeros(1)}, str(path))
    return path


def test_written_in_any_order_and_read_back(existing):
    with SafetensorsWriter(existing, SPECS, {"note": "x"}) as writer:
        for key in reversed(TENSORS):
            writer.write(key, TENSORS[key])
    loaded = load_file(str(existing))
    assert loaded.keys() == TENSORS.keys() and all(torch.equal(loaded[k], TENSORS[k]) for k in TENSORS)
    assert [path.name for path in existing.parent.iterdir()] == [existing.name]


def test_an_incomplete_file_is_never_committed(existing):
    before = existing.read_bytes()
    with pytest.raises(ValueError, match="1 tensor\\(s\\) never written, e.g. 'b.bias'"):
        with SafetensorsWriter(existing, SPECS, {}) as writer:
            writer.write("a.weight", TENSORS["a.weight"])
    with pytest.raises(KeyboardInterrupt):
        with SafetensorsWriter(existing, SPECS, {}) as writer:
            writer.write("a.weight", TENSORS["a.weight"])
            raise KeyboardInterrupt()
    assert existing.read_bytes() == before
    assert [path.name for path in existing.parent.iterdir()] == [existing.name]
