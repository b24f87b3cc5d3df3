"""API for runs: the queue (order, moves), one run's progress / log / files / gallery, stop and resume."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from .events import follow_log, read_events, summarise
from .forms import run_config_text
from .paths import PathRefused, confine
from .queue_view import queue_entries
from .routes_config import FormBody
from .runs import LOG_NAME, RUNNING, RunNotFound, RunRecord, file_kind
from .samples import gallery
from .scheduler import Scheduler
from .settings import TrainerName

router = APIRouter()


class RunBody(FormBody):
    name: str = "run"
    trainer: TrainerName = "lora"


class MoveBody(BaseModel):
    direction: Literal["up", "down"]


def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


def _record(request: Request, run_id: str) -> RunRecord:
    record = request.app.state.store.load(run_id)
    if record is None:
        raise RunNotFound(run_id)
    return record


def _view(request: Request, record: RunRecord) -> dict:
    folder = request.app.state.store.folder(record.id)
    return {**asdict(record), "progress": summarise(read_events(folder)),
            "tensorboard": request.app.state.tensorboard.url(record.id)}


@router.get("/runs")
def list_runs(request: Request) -> list[dict]:
    return [_view(request, record) for record in request.app.state.store.all()]


@router.post("/runs", status_code=201)
def create_run(body: RunBody, request: Request) -> dict:
    """Validate (422 with the CLI's messages) and queue a run of `trainer`; its output goes to its own folder."""
    settings = request.app.state.settings
    text = body.text()
    record = _scheduler(request).submit(body.name, lambda folder: run_config_text(text, settings, folder),
                                        body.trainer)
    return _view(request, record)


@router.get("/runs/{run_id}")
def get_run(run_id: str, request: Request) -> dict:
    record = _record(request, run_id)
    return {**_view(request, record), "toml": request.app.state.store.config_text(run_id)}


@router.post("/runs/{run_id}/stop")
def stop_run(run_id: str, request: Request) -> dict:
    return _view(request, _scheduler(request).stop(run_id))


@router.post("/runs/{run_id}/resume")
def resume_run(run_id: str, request: Request) -> dict:
    return _view(request, _scheduler(request).resume(run_id))


@router.post("/runs/{run_id}/move")
def move_run(run_id: str, body: MoveBody, request: Request) -> dict:
    """Move a queued run one place up or down the queue (409 for a run that is not queued, or already at that end)."""
    return _view(request, _scheduler(request).move(run_id, body.direction))


@router.get("/runs/{run_id}/events")
def run_events(run_id: str, request: Request, after: int = 0) -> dict:
    """progress.jsonl events from line `after`; `next` is the `after` of the following poll."""
    _record(request, run_id)
    events = read_events(request.app.state.store.folder(run_id), after)
    return {"events": events, "next": after + len(events)}


@router.get("/runs/{run_id}/log/follow")
def follow_run_log(run_id: str, request: Request, after: int | None = None, lines: int = 200) -> dict:
    """The log's new lines since byte `after` (none: its last `lines`), the line a progress bar is still redrawing,
    and the `after` of the next poll: a page appends what is new instead of redrawing the whole log."""
    _record(request, run_id)
    return asdict(follow_log(request.app.state.store.folder(run_id) / LOG_NAME, after, min(lines, 5000)))


@router.get("/runs/{run_id}/gallery")
def run_gallery(run_id: str, request: Request) -> dict:
    """The previews grouped by step with their prompts and seeds, and the compare grid (samples.gallery)."""
    _record(request, run_id)
    folder = request.app.state.store.folder(run_id)
    return gallery(folder, read_events(folder))


@router.get("/runs/{run_id}/files")
def run_files(run_id: str, request: Request) -> list[dict]:
    """Every file the run wrote (weights, samples, config, log), relative to its folder, with its kind
    (runs.file_kind: the final weights, other weights, resume state, samples, the rest)."""
    _record(request, run_id)
    store = request.app.state.store
    folder, output_name = store.folder(run_id), store.output_name(run_id)
    return [{"path": str(path), "size": (folder / path).stat().st_size, "kind": file_kind(path, output_name)}
            for path in store.files(run_id)]


@router.get("/runs/{run_id}/file")
def run_file(run_id: str, path: str, request: Request) -> FileResponse:
    """One file of the run, confined to its folder (`..` and symlinks out are refused)."""
    _record(request, run_id)
    target = confine(request.app.state.store.folder(run_id), path)
    if not target.is_file():
        raise PathRefused(f"{path}: not a file of run {run_id}")
    return FileResponse(target, filename=Path(path).name if target.suffix != ".png" else None)


@router.get("/queue")
def queue(request: Request) -> dict:
    """Running and queued run ids (queued in start order) and `entries`, the queue view's rows (queue_view)."""
    store, settings = request.app.state.store, request.app.state.settings
    running = [record for record in store.all() if record.status == RUNNING]
    queued = _scheduler(request).queued()
    with_progress = [(record, summarise(read_events(store.folder(record.id)))) for record in running]
    return {
        "max_concurrent": settings.max_concurrent,
        "running": [record.id for record in running],
        "queued": [record.id for record in queued],
        "entries": queue_entries(with_progress, queued, settings.max_concurrent),
        "tensorboard": request.app.state.tensorboard.url(),
    }
