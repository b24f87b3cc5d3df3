"""Preprocess commands as background jobs: started at once, followed while they run, cancellable.

A job's stderr is a pseudo-terminal, so the commands draw their tqdm bars as in a terminal; each redraw updates
the job's progress (current / total / percent) and only finished lines go to its log tail. stdout is kept apart:
it holds the command's final summary. Jobs live in server memory only: a restart forgets them (not their files).
"""

from __future__ import annotations

import codecs
import fcntl
import itertools
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .preprocess_jobs import check_arguments
from .settings import GuiSettings

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
KEEP_JOBS = 50          # finished jobs beyond this many are forgotten, oldest first
TAIL_LINES = 200
STDOUT_LINES = 5000     # a summary is short; a listing (`tags --list`) keeps its last lines
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_COUNT = re.compile(r"(\d+)/(\d+) \[")
_PERCENT = re.compile(r"(\d+)%\|")
_LABEL = re.compile(r"^\s*([^:|]+):\s+\d+%\|")


class JobNotFound(LookupError):
    """No job with that id (jobs are kept in memory: a restarted server has none)."""


@dataclass
class Job:
    """One `python -m preprocess COMMAND ARGS...` subprocess and what it has reported so far."""

    id: str
    command: str
    args: list[str]
    status: str = RUNNING
    started: float = field(default_factory=time.time)
    finished: float | None = None
    returncode: int | None = None
    message: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    stdout: deque[str] = field(default_factory=lambda: deque(maxlen=STDOUT_LINES))
    process: subprocess.Popen | None = None
    cancelled: bool = False
    result: dict[str, Any] | None = None   # the dataset folder holding the result (preprocess_jobs.result_location)

    def view(self) -> dict[str, Any]:
        """What the preprocess page shows: status, progress, the log tail and (once there) the summary."""
        return {"id": self.id, "command": self.command, "args": self.args, "status": self.status,
                "started": self.started, "finished": self.finished, "returncode": self.returncode,
                "message": self.message, "progress": dict(self.progress), "log": "\n".join(self.log),
                "stdout": "".join(self.stdout), "result": self.result}

    def feed(self, segment: str, finished_line: bool) -> None:
        """One piece of terminal output: a redraw (ended by \\r) updates progress, a finished line is logged."""
        text = _ESCAPES.sub("", segment).rstrip()
        if not text.strip():
            return
        count, percent = _COUNT.search(text), _PERCENT.search(text)
        if count:
            current, total = int(count[1]), int(count[2])
            self.progress.update(current=current, total=total, percent=100.0 * current / total if total else None)
        elif percent:
            self.progress["percent"] = float(percent[1])
        if count or percent:   # a bar without a description does not keep the previous bar's
            label = _LABEL.match(text)
            if label:
                self.progress["label"] = label[1].strip()
            else:
                self.progress.pop("label", None)
        if finished_line:
            self.log.append(text)


    def complete_progress(self) -> None:
        """A command that succeeded finished its bars, though the last redraw it drew may be an early one (tqdm draws
        at most every 0.1 s, and a bar with leave=False erases itself at the end)."""
        if self.progress.get("total"):
            self.progress["current"] = self.progress["total"]
        self.progress["percent"] = 100.0


class JobManager:
    """Every preprocess job of this server; its methods are safe to call from request handlers."""

    def __init__(self, settings: GuiSettings) -> None:
        self.settings = settings
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, command: str, argv: Sequence[str]) -> Job:
        """Check the arguments (CommandRefused / PathRefused) and start the command; returns while it runs."""
        result = check_arguments(command, argv, self.settings)
        job = Job(id=f"{time.strftime('%H%M%S')}-{next(self._ids)}", command=command, args=list(argv), result=result)
        leader, terminal = os.openpty()
        attributes = termios.tcgetattr(terminal)
        attributes[1] &= ~termios.OPOST   # keep "\n" as is: a lone "\r" then always means a redraw
        termios.tcsetattr(terminal, termios.TCSANOW, attributes)
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
        try:
            job.process = subprocess.Popen([sys.executable, "-m", "preprocess", command, *argv],
                                           cwd=self.settings.workdir, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=terminal, env=env, start_new_session=True)
        except OSError:
            os.close(leader)
            raise
        finally:
            os.close(terminal)
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        threading.Thread(target=self._follow, args=(job, leader), name=f"job-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def all(self) -> list[Job]:
        """Every remembered job, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.started, reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Terminate a running job (and any process it started); a finished one is left as it is."""
        job = self.get(job_id)
        if job.status == RUNNING and job.process is not None:
            job.cancelled = True
            try:
                os.killpg(job.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return job

    def cancel_all(self) -> None:
        for job in self.all():
            self.cancel(job.id)

    def _forget_old(self) -> None:
        finished = sorted((job for job in self._jobs.values() if job.status != RUNNING), key=lambda job: job.started)
        for job in finished[: max(0, len(self._jobs) - KEEP_JOBS)]:
            del self._jobs[job.id]

    def _follow(self, job: Job, leader: int) -> None:
        """Read the job's output until it ends, then record how it ended."""
        assert job.process is not None and job.process.stdout is not None
        reader = threading.Thread(target=_read_stdout, args=(job,), daemon=True)
        reader.start()
        _read_terminal(job, leader)
        returncode = job.process.wait()
        reader.join(timeout=10)
        job.returncode, job.finished = returncode, time.time()
        if job.cancelled:
            job.status, job.message = CANCELLED, "cancelled"
        elif returncode == 0:
            job.status = DONE
            job.complete_progress()
        else:
            lines = list(job.log) or "".join(job.stdout).strip().splitlines()
            job.status = FAILED
            job.message = lines[-1] if lines else f"{job.command} exited with code {returncode}"


def _read_stdout(job: Job) -> None:
    assert job.process is not None and job.process.stdout is not None
    for line in iter(job.process.stdout.readline, b""):
        job.stdout.append(line.decode("utf-8", errors="replace"))


def _read_terminal(job: Job, leader: int) -> None:
    """Split the terminal output at "\\r" (a redraw) and "\\n" (a finished line) until every writer closed it."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:   # EIO: the command and its children have exited
                break
            if not chunk:
                break
            pending += decoder.decode(chunk)
            *pieces, pending = re.split(r"(\r|\n)", pending)
            for text, separator in zip(pieces[::2], pieces[1::2]):
                job.feed(text, separator == "\n")
    finally:
        os.close(leader)
    job.feed(pending, True)
