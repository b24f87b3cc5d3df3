"""A resume checks the saved state before it loads anything: a damaged file, a missing manifest or a run set up
differently is refused with one line naming the file or key, and a state that resumes does so exactly, also when a
killed save left a half-written folder beside it."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil

import pytest
import torch
from cli_checks import (
    FINISHED_STEPS,
    assert_refused,
    assert_trained,
    assert_unchanged,
    copy_run,
    events,
    finished_run,
    resume_args,
    snapshot,
    train,
)
from safetensors.torch import load_file

from library.atomic_files import RETIRED_SUFFIX, staging_folder
from library.training.state import STATE_DIR_NAME
from library.training.state_manifest import MANIFEST_FILE

pytestmark = pytest.mark.slow  # every test runs the trainer CLI


@pytest.fixture(scope="module")
def finished(tiny_model_factory, tmp_path_factory):
    """One run trained with its state saved, shared by every test (each works on a copy)."""
    return finished_run(tiny_model_factory("sd1").folder, tmp_path_factory.mktemp("finished"))


@pytest.fixture(scope="module")
def resumed_lora(finished, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The LoRA an untouched copy of the run ends with when resumed: what every successful resume must equal."""
    run = copy_run(finished, tmp_path_factory.mktemp("clean") / "run")
    assert_trained(train(resume_args(run)))
    return load_file(run / "lora.safetensors")


def _refused_resume(run, damaged_name: str, *extra: str) -> None:
    """Refused naming the file or key; every earlier file as it was, the run's config.toml too (it records what
    the state was trained with, which the refusal tells the user to look up)."""
    before, events_before, config_before = snapshot(run), events(run), (run / "config.toml").read_bytes()
    assert_refused(train(resume_args(run, *extra)), "training.resume", damaged_name)
    assert_unchanged(run, before, events_before)
    assert (run / "config.toml").read_bytes() == config_before


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("optimizer.bin", _truncate),
        ("scheduler.bin", _truncate),
        ("adapter.safetensors", _truncate),
        ("furnace_state.json", _truncate),
        ("random_states_0.pkl", _truncate),
        ("random_states_0.pkl", _flip_last_byte),  # same size: only the hash tells
        (MANIFEST_FILE, _truncate),
    ],
)
def test_a_damaged_state_file_is_refused_naming_it(finished, tmp_path, name, damage):
    run = copy_run(finished, tmp_path / "run")
    damage(run / STATE_DIR_NAME / name)
    _refused_resume(run, str(run / STATE_DIR_NAME / name))


def test_a_state_without_manifest_is_refused(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    (run / STATE_DIR_NAME / MANIFEST_FILE).unlink()
    _refused_resume(run, str(run / STATE_DIR_NAME / MANIFEST_FILE))


@pytest.mark.parametrize(
    ("setting", "named"),
    [(["--network_dim", "8"], "network.dim"), (["--optimizer.type", "SGD"], "optimizer.type"),
     (["--network.ema_decay", "0.99"], "network.ema_decay")],
)
def test_resuming_with_other_settings_is_refused_naming_the_key(finished, tmp_path, setting, named):
    run = copy_run(finished, tmp_path / "run")
    _refused_resume(run, named, *setting)


class _RunsCodeWhenUnpickled:
    """A pickle that creates ``marker`` if anything unpickles it with code allowed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


@pytest.mark.parametrize("content", ["another version", "code"])
def test_random_states_that_do_not_restore_stop_the_resume(finished, tmp_path, content):
    """A random-state file whose hash matches its manifest but which accelerate cannot restore (written by another
    version, say): accelerate only logs that at INFO; the trainer refuses instead of resuming inexactly. A file
    that asks to run code when unpickled is refused the same way, its code never run."""
    run = copy_run(finished, tmp_path / "run")
    state = run / STATE_DIR_NAME
    rng = state / "random_states_0.pkl"
    marker = tmp_path / "unpickled"
    payload = "from another version" if content == "another version" else _RunsCodeWhenUnpickled(marker)
    rng.write_bytes(pickle.dumps({"random_state": payload, "torch_manual_seed": payload}))
    manifest = json.loads((state / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["files"][rng.name] = {"size": rng.stat().st_size, "sha256": hashlib.sha256(rng.read_bytes()).hexdigest()}
    (state / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    _refused_resume(run, str(rng))
    assert not marker.exists()


def _assert_resumed_exactly(run, expected: dict[str, torch.Tensor]) -> None:
    result = train(resume_args(run))
    assert_trained(result)
    start = [event for event in events(run) if event["event"] == "start"][-1]
    assert start["resumed"] is True and start["step"] == FINISHED_STEPS
    lora = load_file(run / "lora.safetensors")
    assert lora.keys() == expected.keys()
    assert all(torch.equal(lora[key], expected[key]) for key in expected)


def _half_written_copy(state, staging) -> None:
    """What a save killed inside accelerate leaves: some files, one of them cut short, no manifest."""
    shutil.copytree(state, staging)
    (staging / MANIFEST_FILE).unlink()
    _truncate(staging / "optimizer.bin")


def test_a_save_killed_mid_write_leaves_the_previous_state_which_resumes_exactly(finished, resumed_lora, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    _half_written_copy(run / STATE_DIR_NAME, staging_folder(run / STATE_DIR_NAME))
    _assert_resumed_exactly(run, resumed_lora)


def test_a_save_killed_between_its_renames_resumes_exactly_from_the_previous_state(finished, resumed_lora, tmp_path):
    """Killed after the old state was moved aside and before the new one was renamed in: only the previous state
    (aside) and the staged one remain; the resume puts the previous one back and continues from it."""
    run = copy_run(finished, tmp_path / "run")
    state = run / STATE_DIR_NAME
    _half_written_copy(state, staging_folder(state))
    state.rename(state.with_name(f".{state.name}{RETIRED_SUFFIX}"))
    _assert_resumed_exactly(run, resumed_lora)
