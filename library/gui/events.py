"""Reading what a run reports: progress.jsonl events and its console log, as a terminal would show it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

PROGRESS_NAME = "progress.jsonl"
# Terminal escape sequences (colours, cursor moves such as tqdm's "\x1b[A"): CSI, OSC and two-byte escapes.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
FOLLOW_TAIL_BYTES = 256 * 1024  # a log followed from its end starts at most this far back


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
    """The last `lines` lines of a log file as a terminal shows them ('' when it does not exist yet): a progress
    bar that redraws itself with carriage returns shows its latest state only, escape codes are removed."""
    chunk = follow_log(path, None, lines)
    shown = chunk.lines + ([chunk.partial] if chunk.partial.strip() else [])
    return "".join(line + "\n" for line in shown[-max(1, lines):])


def _last_redraw(line: str) -> str:
    """What a terminal shows of one line (no newline): its last carriage-return redraw, escape codes removed."""
    redraws = [part for part in _ESCAPES.sub("", line).split("\r") if part.strip()]
    return redraws[-1] if redraws else ""


@dataclass
class LogChunk:
    """Lines a log gained since a byte offset, as shown on a terminal; `partial` is the line still being redrawn
    (a progress bar), `next` the offset to read from next time (the start of that unfinished line)."""

    lines: list[str]
    partial: str
    next: int


def follow_log(path: Path, after: int | None, lines: int = 200) -> LogChunk:
    """The log from byte `after` on, so a page appends only what is new; with `after` None, or past the end (a log
    that was replaced), its last `lines` lines (read from at most FOLLOW_TAIL_BYTES back)."""
    if not path.is_file():
        return LogChunk([], "", 0)
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        from_end = after is None or after > size
        start = max(0, size - FOLLOW_TAIL_BYTES) if from_end else after
        handle.seek(start)
        data = handle.read(size - start)
    complete, newline, unfinished = data.rpartition(b"\n")
    text = complete.decode("utf-8", errors="replace").split("\n") if newline else []
    if from_end and start > 0:
        text = text[1:]  # the line the window's start cut in two
    shown = [line for line in map(_last_redraw, text) if line.strip()]
    if from_end:
        shown = shown[-max(1, lines):]
    return LogChunk(shown, _last_redraw(unfinished.decode("utf-8", errors="replace")), size - len(unfinished))


# The numbers of a step event a run page shows; instance_loss and prior_loss come from DreamBooth's prior preservation.
STEP_FIELDS = ("step", "epoch", "loss", "smoothed_loss", "instance_loss", "prior_loss", "lr", "eta_seconds",
               "total_steps")


def summarise(events: list[dict]) -> dict:
    """The latest numbers a run page shows: step, epoch, losses, lr, ETA, class-image generation, samples, saved
    files and the compare grid."""
    latest: dict = {"samples": [], "checkpoints": []}
    for event in events:
        kind = event.get("event")
        if kind == "start":
            latest["total_steps"] = event.get("total_steps")
        elif kind == "class_images":
            latest["class_images"] = {"done": event.get("done"), "total": event.get("total")}
        elif kind == "step":
            latest.update({key: event.get(key) for key in STEP_FIELDS if key in event})
        elif kind == "compare":
            latest["compare"] = event.get("file")
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
