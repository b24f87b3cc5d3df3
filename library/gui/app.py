"""The FastAPI application: token check on every /api/ call, the static page, and the queue's lifetime."""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from library.config import ConfigError

from .forms import field_messages
from .paths import PathRefused
from .preprocess_jobs import CommandRefused
from .routes_config import router as config_router
from .routes_runs import router as runs_router
from .runs import RunNotFound, RunStore
from .scheduler import QueueError, Scheduler
from .settings import GuiSettings
from .tensorboard import TensorBoard

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def _token_of(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    # Images and downloads cannot send headers: they carry the token in the query string.
    return request.headers.get("x-furnace-token") or request.query_params.get("token") or ""


def create_app(settings: GuiSettings) -> FastAPI:
    """The server for one set of folders; trainers start only while the app runs (its lifespan)."""
    store = RunStore(settings.runs_root)
    scheduler = Scheduler(settings, store)
    tensorboard = TensorBoard(settings.runs_root, settings.tensorboard_port)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler.start()
        tensorboard.start()
        yield
        scheduler.shutdown()
        tensorboard.stop()

    app = FastAPI(title="Furnace", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.store, app.state.scheduler = settings, store, scheduler
    app.state.tensorboard = tensorboard

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if settings.token and request.url.path.startswith("/api/"):
            if not hmac.compare_digest(_token_of(request).encode(), settings.token.encode()):
                return JSONResponse({"detail": "missing or wrong token"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, error: ConfigError) -> Response:
        return JSONResponse({"detail": str(error), "messages": field_messages(error)}, status_code=422)

    @app.exception_handler(PathRefused)
    async def path_refused(request: Request, error: PathRefused) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=403)

    @app.exception_handler(CommandRefused)
    async def command_refused(request: Request, error: CommandRefused) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(QueueError)
    async def queue_error(request: Request, error: QueueError) -> Response:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(RunNotFound)
    async def not_found(request: Request, error: RunNotFound) -> Response:
        return JSONResponse({"detail": f"no such run: {error.args[0]}"}, status_code=404)

    app.include_router(config_router, prefix="/api")
    app.include_router(runs_router, prefix="/api")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
