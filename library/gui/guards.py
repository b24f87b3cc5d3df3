"""What every request must pass before a route sees it: a body of bounded size, and a Host header naming this
server (a page on another site that resolves its own name to this machine, DNS rebinding, is refused)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import LOOPBACK, GuiSettings

MAX_BODY_BYTES = 1 << 20
"""Largest request body accepted: the form's values or a TOML file are a few KB."""

_WILDCARDS = ("0.0.0.0", "::", "")


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


class BodyLimit:
    """Answer 413 to a request whose body is over ``max_bytes``, declared or sent in chunks; the body is read
    before the route runs, so no route ever holds more than that."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")  # a number: the HTTP parser refuses anything else
        too_large = f"request body over {self.max_bytes} bytes"
        if declared is not None and int(declared) > self.max_bytes:
            await _refuse(scope, receive, send, 413, too_large)
            return
        received: list[Message] = []
        size = 0
        while True:
            message = await receive()
            received.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _refuse(scope, receive, send, 413, too_large)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)


def allowed_hosts(settings: GuiSettings) -> frozenset[str]:
    """Host names a request may carry: loopback names, the listen address, this machine's names and
    ``--allowed-host`` (the address a connection arrived on is accepted per request)."""
    names: set[str] = {*LOOPBACK, socket.gethostname(), socket.getfqdn(), *settings.allowed_hosts}
    if settings.host not in _WILDCARDS:
        names.add(settings.host)
    return frozenset(name.lower() for name in names)


def host_name(header: str) -> str:
    """``example.org:28000`` -> ``example.org``; ``[::1]:28000`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if header.count(":") == 1 else header.lower()


class HostCheck:
    """Answer 400 to a request without a Host header and 421 to one naming a host this server is not."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        if not header:
            await _refuse(scope, receive, send, 400, "missing Host header")
            return
        name = host_name(header)
        local = scope.get("server") or ("", 0)
        if name not in self.allowed and name != str(local[0]).lower():
            hint = "open the address the server printed, or start it with --allowed-host NAME"
            await _refuse(scope, receive, send, 421, f"Host {header!r} is not served here: {hint}")
            return
        await self.app(scope, receive, send)
