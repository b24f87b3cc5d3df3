"""API for the preprocess page: the commands' options, and jobs that run one in the background."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from .jobs import JobManager
from .preprocess_jobs import describe_commands
from .routes_config import REQUEST_BODY

router = APIRouter()


class PreprocessBody(BaseModel):
    model_config = REQUEST_BODY

    command: str
    args: list[str] = []


def _jobs(request: Request) -> JobManager:
    return request.app.state.jobs


@router.get("/preprocess")
def preprocess_commands() -> dict:
    """crop / tag / caption / tags / doctor with their options, read from the preprocess CLI's own parser."""
    return describe_commands()


@router.post("/preprocess", status_code=202)
def preprocess_start(body: PreprocessBody, request: Request) -> dict[str, Any]:
    """Start one preprocess command as a job (paths confined to the configured folders); poll it by its id."""
    return _jobs(request).start(body.command, body.args).view()


@router.get("/preprocess/jobs")
def preprocess_jobs(request: Request) -> list[dict[str, Any]]:
    """The jobs this server remembers, newest first."""
    return [job.view() for job in _jobs(request).all()]


@router.get("/preprocess/jobs/{job_id}")
def preprocess_job(job_id: str, request: Request) -> dict[str, Any]:
    """Status (running / done / failed / cancelled), progress, log tail, exit code and the final summary."""
    return _jobs(request).get(job_id).view()


@router.post("/preprocess/jobs/{job_id}/cancel")
def preprocess_cancel(job_id: str, request: Request) -> dict[str, Any]:
    return _jobs(request).cancel(job_id).view()
