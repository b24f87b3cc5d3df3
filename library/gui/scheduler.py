"""The run queue: start queued runs as trainer subprocesses, at most N at a time, and follow them to the end.

A run's status lives in its run.json, so after a server restart queued runs are still queued and a trainer that kept
running (it runs in its own session, whose id is the recorded pid) is adopted again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .events import final_status, log_tail, read_events
from .runs import (
    CANCELLED,
    CONFIG_NAME,
    FAILED,
    LOG_NAME,
    QUEUED,
    RUNNING,
    STATE_DIR,
    STOPPED,
    RunNotFound,
    RunRecord,
    RunStore,
)
from .settings import GuiSettings

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.5


class QueueError(ValueError):
    """An action that does not fit the run's state (e.g. resuming a running run)."""


class Scheduler:
    """Owns the trainer processes; every public method is safe to call from request handlers."""

    def __init__(self, settings: GuiSettings, store: RunStore) -> None:
        self.settings = settings
        self.store = store
        self._processes: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="furnace-queue", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop polling; trainers keep running in their own sessions and are adopted on the next start."""
        self._halt.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._halt.wait(POLL_SECONDS):
            try:
                self.tick()
            except Exception:  # the queue must outlive one bad run folder
                logger.exception("queue tick failed")

    # --- actions ---------------------------------------------------------------------------------------------
    def submit(self, name: str, render: Callable[[Path], str], trainer: str = "lora") -> RunRecord:
        """Queue a run; `render(folder)` returns its TOML (and may raise ConfigError: nothing is created then)."""
        with self._lock:
            record = self.store.create(name, render, trainer)
        self.tick()
        return self.store.load(record.id) or record

    def stop(self, run_id: str) -> RunRecord:
        """Queued: cancelled. Running: SIGTERM, so the trainer saves state/ and exits at the next step."""
        with self._lock:
            record = self._get(run_id)
            if record.status == QUEUED:
                record.status, record.finished = CANCELLED, time.time()
                self.store.save(record)
            elif record.status == RUNNING and record.pid:
                _signal_group(record.pid, signal.SIGTERM)
                record.message = "stopping: saving state"
                self.store.save(record)
            else:
                raise QueueError(f"run {run_id} is {record.status}; only queued or running runs can be stopped")
            return record

    def resume(self, run_id: str) -> RunRecord:
        """Queue a stopped run again; with a saved state/ it continues from it (`--resume latest`).

        Only a stopped run: a done, failed or cancelled one keeps its status and files as they are (a new run is
        "Edit and re-run").
        """
        with self._lock:
            record = self._get(run_id)
            if record.status != STOPPED:
                raise QueueError(f"run {run_id} is {record.status}; only a stopped run can be resumed "
                                 "(to train it again, edit and re-run it as a new run)")
            record.resume = (self.store.folder(run_id) / STATE_DIR).is_dir()
            record.status, record.order, record.message = QUEUED, time.time(), ""
            record.pid = record.returncode = record.finished = None
            self.store.save(record)
        self.tick()
        return self.store.load(run_id) or record

    def move(self, run_id: str, direction: Literal["up", "down"]) -> RunRecord:
        """Move a queued run one place earlier ("up") or later ("down") in the queue.

        A run moves by taking an `order` between its new neighbours' (moving down is the next run moving up): one
        atomic write of one run.json, so the order survives a restart, and a crash leaves the old order or the new.
        """
        with self._lock:
            record = self._get(run_id)
            queued = self.queued()
            if record.status != QUEUED:
                raise QueueError(f"run {run_id} is {record.status}; only a queued run can be moved")
            index = [item.id for item in queued].index(run_id)
            neighbour = index - 1 if direction == "up" else index + 1
            if not 0 <= neighbour < len(queued):
                raise QueueError(f"run {run_id} is already {'first' if direction == 'up' else 'last'} in the queue")
            self._place_before(queued, *((index, neighbour) if direction == "up" else (neighbour, index)))
            return self._get(run_id)

    def queued(self) -> list[RunRecord]:
        """The queued runs in the order they will start."""
        return sorted((record for record in self.store.all() if record.status == QUEUED), key=lambda r: r.order)

    def _place_before(self, queued: list[RunRecord], moving: int, before: int) -> None:
        """Give queued[moving] an order between queued[before] and the run ahead of it; when the two orders are
        too close for a float between them (after very many moves), the whole queue is spaced out again."""
        record, ahead = queued[moving], queued[before]
        previous = queued[before - 1].order if before > 0 else ahead.order - 1
        order = (previous + ahead.order) / 2
        if previous < order < ahead.order:
            record.order = order
            self.store.save(record)
            return
        ordered = [item for item in queued if item is not record]
        ordered.insert(ordered.index(ahead), record)
        for number, item in enumerate(ordered):
            item.order = queued[0].order + number
            self.store.save(item)

    def _get(self, run_id: str) -> RunRecord:
        record = self.store.load(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return record

    # --- the queue -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Finish ended runs, then start queued ones while there is room."""
        with self._lock:
            records = self.store.all()
            running = [record for record in records if record.status == RUNNING]
            for record in running:
                if not self._alive(record):
                    self._finish(record)
            room = self.settings.max_concurrent - sum(record.status == RUNNING for record in running)
            for record in self.queued()[: max(0, room)]:
                self._launch(record)

    def _alive(self, record: RunRecord) -> bool:
        """A run lasts while any process of its group runs: `accelerate launch` may exit before its trainer."""
        process = self._processes.get(record.id)
        if process is not None and process.poll() is None:
            return True
        if process is not None:
            record.returncode = process.returncode
        return record.pid is not None and _group_running(record.pid)

    def _finish(self, record: RunRecord) -> None:
        self._processes.pop(record.id, None)
        folder = self.store.folder(record.id)
        status, message = final_status(read_events(folder))
        if status == FAILED and not message:
            tail = log_tail(folder / LOG_NAME, 5).strip().splitlines()
            message = tail[-1] if tail else f"trainer exited with code {record.returncode}"
        record.status, record.message, record.finished, record.pid = status, message, time.time(), None
        self.store.save(record)
        logger.info("run %s %s %s", record.id, status, message)

    def command(self, record: RunRecord) -> list[str]:
        """The trainer command line for a run (an argument list: never a shell string)."""
        config = str(self.store.folder(record.id) / CONFIG_NAME)
        args = [str(self.settings.trainer_script(record.trainer)), "--config", config]
        if record.resume:
            args += ["--resume", "latest"]
        if self.settings.launcher == "accelerate":
            launcher = str(Path(sys.executable).with_name("accelerate"))
            return [launcher, "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                    "--dynamo_backend", "no", *args]
        return [sys.executable, *args]

    def _launch(self, record: RunRecord) -> None:
        folder = self.store.folder(record.id)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        record.command = self.command(record)
        with open(folder / LOG_NAME, "ab") as log:
            process = subprocess.Popen(record.command, cwd=self.settings.workdir, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        self._processes[record.id] = process
        record.status, record.pid, record.started, record.returncode = RUNNING, process.pid, time.time(), None
        self.store.save(record)
        logger.info("run %s started (pid %d)", record.id, process.pid)


def _signal_group(pid: int, signum: int) -> None:
    """Signal the trainer's process group (the launcher and the trainer it started)."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _group_running(group: int) -> bool:
    """Whether a live (not zombie) process belongs to process group `group` (the run's session leader's pid)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False
