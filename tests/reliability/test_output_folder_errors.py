"""An output folder the trainer cannot write to (a file in its place, a read-only folder, a disk that fills during
a save) ends the run with one line naming the folder and the file, exit code 1, and the earlier output intact."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess

import pytest
from cli_checks import (
    FINISHED_STEPS,
    assert_refused,
    assert_unchanged,
    copy_run,
    events,
    finished_run,
    resume_args,
    snapshot,
    train,
    train_args,
)

from library.training.state import STATE_DIR_NAME

pytestmark = [
    pytest.mark.slow,  # every test runs the trainer CLI
    pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="POSIX resource limits"),
]

SAVE_AT = FINISHED_STEPS + 1  # the resumed run saves its LoRA and its state here, then stops at the next step


@pytest.fixture(scope="module")
def finished(tiny_model_factory, tmp_path_factory):
    """One run trained with its state saved, shared by every test (each works on a copy)."""
    return finished_run(tiny_model_factory("sd1").folder, tmp_path_factory.mktemp("finished"))


def _saving_resume(run) -> list[str]:
    return resume_args(run, "--save_every_n_steps", str(SAVE_AT))


def _lora_bytes(run) -> int:
    """The size of the run's LoRA file; its optimizer state is about twice that."""
    return (run / "lora.safetensors").stat().st_size


def test_an_output_dir_that_is_a_file_is_refused(finished, tiny_model_factory, tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("not a folder\n", encoding="utf-8")
    dataset = finished.parent / "dataset"
    result = train(train_args(tiny_model_factory("sd1").folder, dataset, taken))
    assert_refused(result, "output.output_dir", str(taken))
    assert taken.read_text(encoding="utf-8") == "not a folder\n"


@contextlib.contextmanager
def _read_only(folder):
    """``folder`` made read-only: by its permission bits, or, for root (whom they do not stop), by a read-only
    bind mount (skipped where this process may not mount)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("root without permission to mount: cannot make a folder read-only for root")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


def test_a_read_only_output_folder_is_refused(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before, events_before = snapshot(run), events(run)
    with _read_only(run):
        result = train(resume_args(run))
    assert_refused(result, "cannot write to", str(run), "config.toml")
    assert_unchanged(run, before, events_before)


@pytest.mark.parametrize(
    ("room", "failing"),
    [(1.2, STATE_DIR_NAME), (0.5, f"lora-step{SAVE_AT:08d}.safetensors")],
    ids=["state", "lora"],
)
def test_a_save_that_runs_out_of_room_stops_with_one_line(finished, tmp_path, room, failing):
    """A stand-in for a full disk: a file-size limit (RLIMIT_FSIZE), under which every write beyond the limit
    fails with EFBIG, as writes on a full disk fail with ENOSPC; the trainer reports both the same way. With room
    for the LoRA file (``room`` times its size) the state save fails (inside torch's writer); with less, the LoRA
    save does."""
    run = copy_run(finished, tmp_path / "run")
    before, events_before = snapshot(run), events(run)
    result = train(_saving_resume(run), file_size_limit=int(room * _lora_bytes(run)))
    assert_refused(result, f"no space left on {run} while saving {run / failing}", "intact")
    assert_unchanged(run, before, events_before)


def test_a_full_disk_during_the_state_save_stops_with_one_line(finished, tmp_path):
    """A real full disk: a small tmpfs (where this process may mount one), filled until the LoRA file fits and the
    state does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("no permission to mount a tmpfs; the file-size-limit test stands in for a full disk")
    try:
        run = copy_run(finished, disk / "run")
        stats = os.statvfs(disk)
        ballast = stats.f_bavail * stats.f_frsize - int(1.5 * _lora_bytes(run))
        (disk / "ballast").write_bytes(b"\0" * ballast)
        before, events_before = snapshot(run), events(run)
        result = train(_saving_resume(run))
        assert_refused(result, f"no space left on {run} while saving {run / STATE_DIR_NAME}", "intact")
        assert_unchanged(run, before, events_before)
    finally:
        shutil.rmtree(disk / "run", ignore_errors=True)
        subprocess.run(["umount", str(disk)], check=True, capture_output=True)
