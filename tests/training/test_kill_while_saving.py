"""A trainer killed at any moment, even mid-save, leaves only whole files: every .safetensors loads, every file that
was complete stays complete, and the resume state is always one that resumes.

The trainer saves its LoRA and its resume state after every step. It is killed (SIGKILL) at random moments and
resumed from the state it left, several times. Between the kills it is also frozen (SIGSTOP) at random moments and
the folder is checked while it is frozen: what a frozen writer has on disk is exactly what a kill at that instant
leaves, so each freeze tests one more kill without paying for another trainer start. Half of the freezes follow the
saved files and strike right after one of them changes, so many land in the middle of a save.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from library.atomic_files import is_temporary
from library.gui.events import read_events
from library.training.state import ADAPTER_FILE, POSITION_FILE, STATE_DIR_NAME, resolve_resume_dir

from prewarmed_python import Started
from trainer_cli import REPO, base_args, start_python

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP and /proc process states"),
]

SEED = 16
KILLS = 3  # real SIGKILLs, each followed by a resume
FREEZES_PER_RUN = 5  # kill instants checked while the trainer is stopped
MAX_DELAY = 0.8  # seconds: a few steps, each with its two saves, on a tiny model


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


class Checker:
    """What a kill at this instant would leave, checked; remembers the files that were complete."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.complete: set[Path] = set()
        self.mid_save = 0  # checks that found a save under way

    def check(self, label: str) -> None:
        output = self.output
        if any(is_temporary(entry) for entry in output.iterdir()):
            self.mid_save += 1
        found = {path for path in output.rglob("*.safetensors") if not _is_hidden(path, output)}
        missing = sorted(str(path.relative_to(output)) for path in self.complete - found)
        assert not missing, f"{label}: complete files disappeared: {missing}"
        for path in sorted(found):
            try:
                load_file(str(path))
            except Exception as error:  # noqa: BLE001 - any failure to load is the bug this test looks for
                raise AssertionError(f"{label}: {path.relative_to(output)} does not load: {error}") from None
        self.complete |= {path for path in found if path.parent == output}  # state/ files are replaced as a folder
        state = output / STATE_DIR_NAME
        if state.is_dir():
            json.loads((state / POSITION_FILE).read_text(encoding="utf-8"))
            load_file(str(state / ADAPTER_FILE))


def _start(args: list[str], log: Path) -> subprocess.Popen | Started:
    return start_python([str(REPO / "train_network.py"), *args], log, env={"OMP_NUM_THREADS": "1"})


def _wait_for_new_checkpoint(process: subprocess.Popen | Started, output: Path, seen: int, log: Path) -> list[dict]:
    """The events this process wrote, once it has saved at least once."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"trainer exited {process.returncode}:\n{log.read_text(encoding='utf-8')[-3000:]}")
        events = read_events(output)[seen:]
        if any(event["event"] == "checkpoint" for event in events):
            return events
        time.sleep(0.05)
    raise AssertionError("the trainer saved nothing within 300 s")


def _saved_files(output: Path) -> set[tuple[str, int]]:
    """Names and sizes of the weights and temporaries in the folder: they change as soon as a save writes."""
    listing = set()
    for entry in os.scandir(output):
        if entry.name.endswith(".safetensors") or is_temporary(entry.name):
            try:
                listing.add((entry.name, entry.stat().st_size))
            except FileNotFoundError:  # renamed away between listing and stat
                continue
    return listing


def _wait_for_writes(output: Path, count: int, timeout: float = 3.0) -> None:
    """Return as soon as the saved files changed ``count`` times: a write is then under way or just done."""
    deadline = time.monotonic() + timeout
    before = _saved_files(output)
    while count and time.monotonic() < deadline:
        now = _saved_files(output)
        if now != before:
            count, before = count - 1, now
        time.sleep(0.0002)


def _freeze(process: subprocess.Popen | Started) -> None:
    process.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{process.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):  # stopped, not merely signalled
        time.sleep(0.0005)


def test_sigkill_while_saving_never_leaves_a_broken_file(tiny_model_factory, concept_dataset, tmp_path):
    rng = random.Random(SEED)
    output = tmp_path / "run"
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, output,
                     max_train_steps=100_000, save_every_n_steps=1)
    args += ["--output.save_state", "true"]
    checker = Checker(output)
    resume_step = None
    for run in range(KILLS):
        seen = len(read_events(output))
        log = tmp_path / f"trainer-{run}.log"
        process = _start(args + (["--resume", "latest"] if resume_step is not None else []), log)
        try:
            events = _wait_for_new_checkpoint(process, output, seen, log)
            if resume_step is not None:
                start = next(event for event in events if event["event"] == "start")
                assert start["resumed"] is True and start["step"] == resume_step
            for freeze in range(FREEZES_PER_RUN):
                if rng.random() < 0.5:
                    _wait_for_writes(output, rng.randint(1, 4))
                else:
                    time.sleep(rng.uniform(0, MAX_DELAY))
                _freeze(process)
                checker.check(f"run {run}, freeze {freeze}")
                process.send_signal(signal.SIGCONT)
            time.sleep(rng.uniform(0, MAX_DELAY))
        finally:
            process.kill()
            process.wait()
        checker.check(f"run {run}, killed")
        resume_dir = resolve_resume_dir("latest", output)  # the state a kill leaves always resumes
        resume_step = json.loads((resume_dir / POSITION_FILE).read_text(encoding="utf-8"))["global_step"]

    assert len(checker.complete) > KILLS
    assert checker.mid_save > 0, "no check found a save under way; the kills never tested a write"
