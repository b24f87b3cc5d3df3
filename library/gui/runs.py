"""Runs on disk: `<runs_root>/<id>/run.json` (status, order, pid) beside the run's TOML, log and outputs.

The folder is the run's `output.output_dir`, so the trainer's progress.jsonl, samples, weights and state/ land next
to the record. Everything the server knows is in these files, which is what lets runs and the queue survive a
restart.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from library.atomic_files import remove_stale_temporaries, write_text_atomic

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
RECORD_NAME, CONFIG_NAME, LOG_NAME = "run.json", "run.toml", "train.log"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class RunNotFound(LookupError):
    """No run folder with that id under the runs root."""


@dataclass
class RunRecord:
    """What the queue needs to know about one run; `order` is the queue position (lower starts first).

    `trainer` picks the script (settings.TRAINERS); `command` is the command line it was last started with.
    """

    id: str
    name: str
    status: str = QUEUED
    order: float = field(default_factory=time.time)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    returncode: int | None = None
    resume: bool = False
    message: str = ""
    trainer: str = "lora"
    command: list[str] | None = None


class RunStore:
    """The run folders under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for folder in root.iterdir():
            remove_stale_temporaries(folder)

    def folder(self, run_id: str) -> Path:
        return self.root / run_id

    def new_id(self, name: str) -> str:
        """`<YYYYmmdd-HHMMSS>-<name>`, made unique; safe as a folder name and in URLs."""
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_UNSAFE.sub('-', name).strip('-')[:40] or 'run'}"
        candidate, number = stem, 1
        while self.folder(candidate).exists():
            number += 1
            candidate = f"{stem}-{number}"
        return candidate

    def create(self, name: str, render: Callable[[Path], str], trainer: str = "lora") -> RunRecord:
        """A new queued run; `render(folder)` gives the TOML it trains with (its output goes to `folder`)."""
        record = RunRecord(id=self.new_id(name), name=name, trainer=trainer)
        folder = self.folder(record.id)
        text = render(folder)
        folder.mkdir(parents=True)
        write_text_atomic(folder / CONFIG_NAME, text)
        self.save(record)
        return record

    def save(self, record: RunRecord) -> None:
        write_text_atomic(self.folder(record.id) / RECORD_NAME, json.dumps(asdict(record), indent=1))

    def load(self, run_id: str) -> RunRecord | None:
        path = self.folder(run_id) / RECORD_NAME
        if not _is_plain_id(run_id) or not path.is_file():
            return None
        known = RunRecord.__dataclass_fields__
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunRecord(**{key: value for key, value in data.items() if key in known})

    def all(self) -> list[RunRecord]:
        """Every run, oldest first."""
        records = [self.load(path.name) for path in self.root.iterdir() if (path / RECORD_NAME).is_file()]
        return sorted((record for record in records if record), key=lambda record: record.created)

    def files(self, run_id: str) -> list[Path]:
        """Every file the run wrote (weights, samples, config, log), relative to its folder and sorted; hidden
        names (unfinished writes among them) and links out of the folder are left out."""
        folder = self.folder(run_id).resolve()
        return [
            path.relative_to(folder)
            for path in sorted(folder.rglob("*"))
            if path.is_file()
            and path.resolve().is_relative_to(folder)
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        ]

    def config_text(self, run_id: str) -> str:
        return (self.folder(run_id) / CONFIG_NAME).read_text(encoding="utf-8")


def _is_plain_id(run_id: str) -> bool:
    return bool(run_id) and not _UNSAFE.search(run_id)
