"""Runs on disk: `<runs_root>/<id>/run.json` (status, order, pid) beside the run's TOML, log and outputs.

The folder is the run's `output.output_dir`, so the trainer's progress.jsonl, samples, weights and state/ land next
to the record. Everything the server knows is in these files, which is what lets runs and the queue survive a
restart.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from library.atomic_files import remove_stale_temporaries, write_text_atomic

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
RECORD_NAME, CONFIG_NAME, LOG_NAME = "run.json", "run.toml", "train.log"
# The trainer's names (library.training.state.STATE_DIR_NAME, sampling.files.SAMPLE_DIR_NAME), spelled here
# because importing them would load torch into the server; tests/gui/test_gui_runs.py checks they agree.
STATE_DIR, SAMPLE_DIR = "state", "sample"
WEIGHTS_SUFFIX = ".safetensors"
# What a run's file is to the user, for the run page: the trained result first, the resume state apart.
FINAL, WEIGHTS, STATE, SAMPLE, OTHER = "final", "weights", "state", "sample", "other"
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

    def output_name(self, run_id: str) -> str | None:
        """The stem of the run's weight files (`output.output_name` of its stored TOML); None without one."""
        try:
            config = tomllib.loads(self.config_text(run_id))
        except (OSError, tomllib.TOMLDecodeError):
            return None
        return config.get("output", {}).get("output_name")

    def config_text(self, run_id: str) -> str:
        return (self.folder(run_id) / CONFIG_NAME).read_text(encoding="utf-8")


def _is_plain_id(run_id: str) -> bool:
    return bool(run_id) and not _UNSAFE.search(run_id)


def file_kind(path: Path, output_name: str | None) -> str:
    """FINAL for the run's final weights (`<output_name>.safetensors`, the file a user downloads), WEIGHTS for its
    other weight files, STATE for the resume state (optimizer, RNG, position), SAMPLE for previews, else OTHER."""
    top = path.parts[0] if len(path.parts) > 1 else None
    if top == STATE_DIR:
        return STATE
    if top == SAMPLE_DIR:
        return SAMPLE
    if top is None and path.suffix == WEIGHTS_SUFFIX:
        return FINAL if path.stem == output_name else WEIGHTS
    return OTHER
