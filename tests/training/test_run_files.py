"""The names of a run's weight files and their training order, as the saver, pruner, compare grid and tool see them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from library.models.errors import ModelLoadError
from library.tools.compare import collect_loras
from library.training.compare_at_end import run_files as grid_rows_source
from library.training.retention import prune_intermediate
from library.training.run_files import (
    RunFile,
    epoch_path,
    final_path,
    parse_run_file,
    run_files,
    step_path,
    trained_steps,
    training_order,
)


def _save(path: Path, steps: int | None) -> Path:
    metadata = {"ss_steps": str(steps)} if steps is not None else {}
    save_file({"x": torch.zeros(1)}, str(path), metadata=metadata)
    return path


def _mixed_run(folder: Path, name: str = "lora") -> list[str]:
    """A run of 10 steps, 4 per epoch, saving every 3 steps and every epoch; returns its file names in training
    order (the order of the step numbers differs from the order of the numbers in the names)."""
    saves = [(step_path(folder, name, 3), 3), (epoch_path(folder, name, 1), 4), (step_path(folder, name, 6), 6),
             (epoch_path(folder, name, 2), 8), (step_path(folder, name, 9), 9), (final_path(folder, name), 10)]
    for path, steps in reversed(saves):
        _save(path, steps)
    return [path.name for path, _ in saves]


def test_written_names_read_back(tmp_path):
    assert parse_run_file(step_path(tmp_path, "lora", 100)) == RunFile(tmp_path / "lora-step00000100.safetensors",
                                                                       "lora", "step", 100)
    assert parse_run_file(epoch_path(tmp_path, "my-run", 2)) == RunFile(tmp_path / "my-run-000002.safetensors",
                                                                        "my-run", "epoch", 2)
    assert parse_run_file(final_path(tmp_path, "lora")) == RunFile(tmp_path / "lora.safetensors", "lora", "final", 0)
    # given the run's name, a name that itself ends like an epoch suffix is that run's final file
    assert parse_run_file(final_path(tmp_path, "v-000001"), "v-000001").kind == "final"
    assert parse_run_file(epoch_path(tmp_path, "lora-other", 1), "lora") is None
    assert parse_run_file(tmp_path / "lora.txt") is None


def test_run_files_follow_training_order(tmp_path):
    expected = _mixed_run(tmp_path)
    _save(tmp_path / "lorax.safetensors", 1)  # another run's file
    (tmp_path / "lora.txt").write_text("not a weight file")
    assert [path.name for path in run_files(tmp_path, "lora")] == expected
    assert trained_steps(epoch_path(tmp_path, "lora", 2)) == 8


def test_the_tool_orders_a_run_folder_as_the_run_orders_its_grid(tmp_path):
    expected = _mixed_run(tmp_path)
    assert [path.name for path in collect_loras([tmp_path])] == expected
    assert [path.name for path in grid_rows_source(tmp_path, "lora")] == expected


def test_the_tool_groups_the_runs_of_one_folder(tmp_path):
    first, second = _mixed_run(tmp_path, "alpha"), _mixed_run(tmp_path, "beta")
    assert [path.name for path in collect_loras([tmp_path])] == first + second


def test_files_without_step_metadata_go_by_the_number_in_their_names(tmp_path):
    expected = [epoch_path(tmp_path, "r", 1), epoch_path(tmp_path, "r", 2), final_path(tmp_path, "r")]
    paths = [_save(path, None) for path in reversed(expected)]
    assert training_order(paths) == expected


def test_an_unreadable_file_is_named(tmp_path):
    (tmp_path / "r.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="r.safetensors: not a readable .safetensors file"):
        run_files(tmp_path, "r")


def test_prune_keeps_the_newest_of_each_kind(tmp_path):
    for step in (100, 200, 300, 1000):
        step_path(tmp_path, "lora", step).write_bytes(b"x")  # retention goes by names only
    for epoch in (1, 2, 3):
        epoch_path(tmp_path, "lora", epoch).write_bytes(b"x")
    final_path(tmp_path, "lora").write_bytes(b"x")
    epoch_path(tmp_path, "lora-other", 1).write_bytes(b"x")
    removed = prune_intermediate(tmp_path, "lora", keep=2)
    assert sorted(path.name for path in removed) == [
        "lora-000001.safetensors", "lora-step00000100.safetensors", "lora-step00000200.safetensors"]
    assert final_path(tmp_path, "lora").exists() and epoch_path(tmp_path, "lora-other", 1).exists()
    assert step_path(tmp_path, "lora", 1000).exists()
