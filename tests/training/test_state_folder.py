"""The resume state folder is swapped in whole: an interrupted save leaves the previous state, and resume finds it."""

from __future__ import annotations

import os

import pytest
import torch

import library.atomic_files as atomic_files
from library.training.state import (
    LoopPosition,
    load_training_state,
    register_adapter_hooks,
    resolve_resume_dir,
    save_training_state,
)
from library.training.state_manifest import SavedFor, trained_shapes


@pytest.fixture
def accelerated(one_layer_accelerator):
    """The layer's weight saved in the state as the 'adapter'."""
    accelerator, layer, optimizer = one_layer_accelerator
    register_adapter_hooks(accelerator, dict(layer.named_parameters()))
    saved_for = SavedFor(optimizer="AdamW", processes=1, tensors=trained_shapes({"layer": layer}))
    return accelerator, layer, optimizer, saved_for


def _train_one_step(layer, optimizer) -> None:
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def test_a_save_killed_between_its_renames_resumes_from_the_previous_state(accelerated, tmp_path, monkeypatch):
    accelerator, layer, optimizer, saved_for = accelerated
    _train_one_step(layer, optimizer)
    save_training_state(accelerator, tmp_path, LoopPosition(global_step=1), saved_for)
    weight_at_step_1 = layer.weight.detach().clone()

    _train_one_step(layer, optimizer)
    real_replace = os.replace

    def killed_before_the_new_folder_is_renamed_in(source, destination):
        if os.fspath(destination) == os.fspath(tmp_path / "state") and not os.fspath(source).endswith(".old"):
            raise KeyboardInterrupt("killed")
        real_replace(source, destination)

    monkeypatch.setattr(atomic_files.os, "replace", killed_before_the_new_folder_is_renamed_in)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(accelerator, tmp_path, LoopPosition(global_step=2), saved_for)
    monkeypatch.undo()
    assert not (tmp_path / "state").exists()  # the old state is aside, the new one staged

    state_dir = resolve_resume_dir("latest", tmp_path)
    assert state_dir == tmp_path / "state"
    assert load_training_state(accelerator, state_dir, saved_for).global_step == 1
    assert torch.equal(layer.weight.detach(), weight_at_step_1)

    save_training_state(accelerator, tmp_path, LoopPosition(global_step=3), saved_for)  # the next save goes through
    assert sorted(path.name for path in tmp_path.iterdir()) == ["state"]
    assert load_training_state(accelerator, state_dir, saved_for).global_step == 3
