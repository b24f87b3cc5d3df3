"""The FastAPI application: Host and body-size checks on every request, token check on every /api/ and
/tensorboard/ call, request bodies refused with the form's messages, the static page, and the lifetime of the queue,
the preprocess jobs and the TensorBoard child."""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from library.config import ConfigError

from .caption_edits import CaptionHistory, EditRefused
from .forms import field_messages, request_problems
from .guards import BodyLimit, HostCheck, allowed_hosts
from .jobs import JobManager, JobNotFound
from .paths import PathRefused
from .preprocess_jobs import CommandRefused
from .routes_config import router as config_router
from .routes_datasets import router as datasets_router
from .routes_jobs import router as jobs_router
from .routes_runs import router as runs_router
from .runs import RunNotFound, RunStore
from .scheduler import QueueError, Scheduler
from .settings import GuiSettings
from .tensorboard import PREFIX as TENSORBOARD_PREFIX
from .tensorboard import TensorBoard
from .tensorboard_proxy import TOKEN_COOKIE, proxy_client
from .tensorboard_proxy import router as tensorboard_router
from .thumbnails import ThumbnailCache

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PROTECTED = ("/api/", TENSORBOARD_PREFIX)


def _token_of(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    # Images and downloads cannot send headers: they carry the token in the query string. TensorBoard's own
    # requests carry the cookie set when its page was opened with one (accepted there only: no cookie-borne
    # credentials for the API).
    cookie = request.cookies.get(TOKEN_COOKIE) if request.url.path.startswith(TENSORBOARD_PREFIX) else None
    return request.headers.get("x-furnace-token") or request.query_params.get("token") or cookie or ""


def create_app(settings: GuiSettings) -> FastAPI:
    """The server for one set of folders; trainers start only while the app runs (its lifespan)."""
    store = RunStore(settings.runs_root)
    scheduler = Scheduler(settings, store)
    tensorboard = TensorBoard(settings.runs_root, settings.tensorboard_port)
    jobs = JobManager(settings)
    thumbnails = ThumbnailCache(settings.runs_root, settings.max_thumbnails)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        tensorboard.start()
        threading.Thread(target=thumbnails.prune, name="thumbnails", daemon=True).start()
        app.state.tensorboard_client = proxy_client()
        yield
        scheduler.shutdown()
        jobs.cancel_all()
        await app.state.tensorboard_client.aclose()
        tensorboard.stop()

    app = FastAPI(title="Furnace", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.store, app.state.scheduler = settings, store, scheduler
    app.state.tensorboard, app.state.jobs = tensorboard, jobs
    app.state.caption_history, app.state.thumbnails = CaptionHistory(), thumbnails

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        path = request.url.path
        if not settings.token or not path.startswith(PROTECTED):
            return await call_next(request)
        if not hmac.compare_digest(_token_of(request).encode(), settings.token.encode()):
            return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        response = await call_next(request)
        if path.startswith(TENSORBOARD_PREFIX) and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, settings.token, path=TENSORBOARD_PREFIX, httponly=True,
                                samesite="strict")
        return response

    app.add_middleware(BodyLimit)
    app.add_middleware(HostCheck, allowed=allowed_hosts(settings))  # added last: runs first

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, error: ConfigError) -> Response:
        return JSONResponse({"detail": str(error), "messages": field_messages(error)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        return await config_error(request, request_problems(error.errors()))

    @app.exception_handler(PathRefused)
    async def path_refused(request: Request, error: PathRefused) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=403)

    @app.exception_handler(CommandRefused)
    async def command_refused(request: Request, error: CommandRefused) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(EditRefused)
    async def edit_refused(request: Request, error: EditRefused) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(QueueError)
    async def queue_error(request: Request, error: QueueError) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(RunNotFound)
    async def not_found(request: Request, error: RunNotFound) -> Response:
        return JSONResponse({"detail": f"no such run: {error.args[0]}"}, status_code=404)

    @app.exception_handler(JobNotFound)
    async def no_job(request: Request, error: JobNotFound) -> Response:
        return JSONResponse({"detail": f"no such preprocess job: {error.args[0]} (jobs are kept in memory)"},
                            status_code=404)

    app.include_router(config_router, prefix="/api")
    app.include_router(runs_router, prefix="/api")
    app.include_router(jobs_router, prefix="/api")
    app.include_router(datasets_router, prefix="/api")
    app.include_router(tensorboard_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
