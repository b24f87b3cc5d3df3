"""Reading what a run reports: progress.jsonl events and the tail of its console log."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

PROGRESS_NAME = "progress.jsonl"


def read_events(folder: Path, after: int = 0) -> list[dict]:
    """Events from line `after` on; a line still being written (no newline yet) is left for the next read."""
    path = folder / PROGRESS_NAME
    if not path.is_file():
        return []
    events: list[dict] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number < after or not line.endswith("\n"):
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                events.append({"event": "unreadable", "line": number})
    return events


def log_tail(path: Path, lines: int = 200) -> str:
    """The last `lines` lines of a log file ('' when it does not exist yet).

    A progress bar redraws itself with carriage returns: only its latest state is kept, as a terminal shows it.
    """
    if not path.is_file():
        return ""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        shown = (_last_redraw(line) for line in handle)
        return "".join(deque((line for line in shown if line.strip()), maxlen=max(1, lines)))


def _last_redraw(line: str) -> str:
    ending = "\n" if line.endswith("\n") else ""
    redraws = [part for part in line.rstrip("\r\n").split("\r") if part.strip()]
    return (redraws[-1] if redraws else "") + ending


def summarise(events: list[dict]) -> dict:
    """The latest numbers a run page shows: step, epoch, loss, lr, ETA, samples and saved files."""
    latest: dict = {"samples": [], "checkpoints": []}
    for event in events:
        kind = event.get("event")
        if kind == "start":
            latest["total_steps"] = event.get("total_steps")
        elif kind == "step":
            latest.update({key: event.get(key) for key in ("step", "epoch", "loss", "smoothed_loss", "lr",
                                                          "eta_seconds", "total_steps") if key in event})
        elif kind == "sample":
            latest["samples"].append(event.get("file"))
        elif kind == "checkpoint":
            latest["checkpoints"].append(event.get("file"))
        elif kind in ("done", "stopped", "error"):
            latest["last"] = kind
            latest["message"] = event.get("message", "")
    return latest


def final_status(events: list[dict]) -> tuple[str, str]:
    """(status, message) of a finished trainer from its last terminal event."""
    for event in reversed(events):
        kind = event.get("event")
        if kind == "done":
            return "done", ""
        if kind == "stopped":
            return "stopped", "stopped; state saved, resume continues from it"
        if kind == "error":
            return "failed", str(event.get("message", "error"))
    return "failed", ""
